// The CUDA backend: every kernel of engine/backend.h on one compute stream, matching the CPU
// reference (engine/cpu). Host glue lives in engine/cuda (this class, the caching allocator,
// cuBLASLt GEMM, cuDNN convolution); device code in kernels/*.cu. It registers itself for
// DeviceType::CUDA at start-up when a device is present, so op code never tests for CUDA.
//
// Float kernels take f32, contiguous tensors on the GPU (as the CPU backend); gemm also takes
// bf16 operands (f32 accumulation). Errors from CUDA, cuBLAS and cuDNN surface as mokd::Error
// naming the op, the tensors and the library's error string.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <initializer_list>
#include <map>
#include <mutex>
#include <string>

#include "engine/backend.h"
#include "engine/cuda/caching_allocator.h"

namespace mokd {

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}
  Device device() const override { return Device::cuda(device_); }

  void copy(const Tensor& src, Tensor& dst) override;
  void fill(Tensor& dst, double value) override;
  void copy_to_host(void* host_dst, const void* dev_src, size_t nbytes) override;
  void copy_from_host(void* dev_dst, const void* host_src, size_t nbytes) override;

  void fill_uniform(Tensor& dst, float lo, float hi, RngKey key) override;
  void fill_normal(Tensor& dst, float mean, float std, RngKey key) override;
  void bernoulli_scaled(Tensor& dst, float keep_prob, RngKey key) override;

  void unary(UnaryOp op, const Tensor& x, Tensor& out, float alpha) override;
  void unary_backward(UnaryOp op, const Tensor& x, const Tensor& gout, Tensor& gin,
                      float alpha) override;
  void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) override;

  void reduce_sum(const Tensor& x, Tensor& out, float scale) override;
  void argmax_lastdim(const Tensor& x, Tensor& out) override;
  void sum_squares_accumulate(const Tensor& x, Tensor& out) override;

  void gemm(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b, float alpha,
            float beta) override;
  void gemm_bias(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) override;

  void softmax(const Tensor& x, Tensor& y, bool log) override;
  void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) override;
  void logsumexp(const Tensor& x, Tensor& out) override;

  void layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y,
                  Tensor& mean, Tensor& rstd) override;
  void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* w, const Tensor& mean,
                           const Tensor& rstd, Tensor& gx, Tensor* gw, Tensor* gb) override;

  void conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p,
              Tensor& y) override;
  void conv2d_backward_data(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                            Tensor& gx) override;
  void conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                              Tensor& gw) override;

  void batch_norm_train(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean,
                        Tensor& running_var, float momentum, float eps, Tensor& y,
                        Tensor& save_mean, Tensor& save_invstd) override;
  void batch_norm_eval(const Tensor& x, const Tensor& w, const Tensor& b,
                       const Tensor& running_mean, const Tensor& running_var, float eps,
                       Tensor& y) override;
  void batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean,
                           const Tensor& invstd, bool training, Tensor& gx, Tensor& gw,
                           Tensor& gb) override;

  void max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) override;
  void max_pool2d_backward(const Tensor& gy, const Tensor& argmax, Tensor& gx) override;
  void avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) override;
  void avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) override;

  void attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor& out,
                 Tensor& lse) override;
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& lse, const Tensor& gout, float scale, Tensor& gq,
                          Tensor& gk, Tensor& gv) override;

  void one_hot(const Tensor& labels, Tensor& out, float on, float off) override;
  void cross_entropy(const Tensor& logits, const Tensor* labels, const Tensor* soft,
                     float smoothing, Tensor& loss_rows, Tensor& lse) override;
  void cross_entropy_backward(const Tensor& logits, const Tensor* labels, const Tensor* soft,
                              float smoothing, const Tensor& lse, const Tensor& gloss_rows,
                              float grad_scale, Tensor* glogits, Tensor* gsoft) override;
  void kl_div(const Tensor& student, const Tensor& teacher, float temperature, Tensor& loss_rows,
              Tensor& lse_s, Tensor& lse_t) override;
  void kl_div_backward(const Tensor& student, const Tensor& teacher, float temperature,
                       const Tensor& lse_s, const Tensor& lse_t, const Tensor& gloss_rows,
                       float grad_scale, Tensor& gstudent) override;

  void adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h) override;
  void sgd_update(Tensor& p, const Tensor& g, Tensor& buf, const SgdHyper& h) override;
  void adam_update_multi(const std::vector<AdamTensorRef>& list) override;
  void sgd_update_multi(const std::vector<SgdTensorRef>& list) override;
  void sum_squares_multi(const std::vector<const Tensor*>& xs, Tensor& out) override;
  void scale_multi(const std::vector<Tensor*>& xs, const Tensor& s) override;

  // ---- CUDA specifics ----
  // Created on first use, each on its own: the stream (non-blocking), the cuBLASLt handle, the
  // cuDNN handle bound to the stream.
  cudaStream_t stream();
  cublasLtHandle_t lt_handle();
  cudnnHandle_t cudnn_handle();
  void synchronize();
  // A cuBLASLt workspace held for the process (from the caching allocator).
  void* lt_workspace(size_t& bytes);
  // Device scratch of n doubles: a tensor that may be dropped as soon as the kernels are queued
  // (the stream orders every later reuse of its block after them).
  Tensor scratch(int64_t n_doubles);

 private:
  void init();
  int device_;
  std::once_flag once_, lt_once_, dnn_once_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cudnnHandle_t dnn_ = nullptr;
  Tensor lt_ws_;
  std::mutex ws_mu_;
  // Uploads go through pinned buffers (copy_from_host): the host copies into one, the DMA runs
  // asynchronously on the stream, and a buffer is reused once the event recorded after its last
  // DMA has fired, so an upload (a training batch) costs no stream synchronisation. A slot grows
  // to the largest upload it has served, up to kStagingMaxBytes (bigger uploads go in pieces).
  // The buffers live as long as the process (the backend is never destroyed before exit).
  struct StagingSlot {
    void* buf = nullptr;
    size_t bytes = 0;
    cudaEvent_t done = nullptr;
  };
  static constexpr int kStagingSlots = 4;
  static constexpr size_t kStagingMaxBytes = size_t(256) << 20;
  StagingSlot staging_[kStagingSlots];
  int staging_next_ = 0;
  std::mutex staging_mu_;
};

// The registered backend and allocator (null when no device was found at start-up).
CudaBackend* cuda_backend();
CudaCachingAllocator* cuda_allocator();

// TF32 for f32 GEMM and convolution: off by default (f32 results within 1e-5 of the CPU); on via
// MOKD_TF32=1 at start-up or cuda_set_tf32(true) (then expect ~1e-3 relative error).
void cuda_set_tf32(bool on);
bool cuda_tf32();

// Preconditions shared by the CUDA host files: f32 on this backend's device, contiguous.
void cuda_expect_f32(const Tensor& t, const char* kernel, const char* arg);
void cuda_expect_on_gpu(const Tensor& t, const char* kernel, const char* arg);

// Runs f; a CudaError from CUDA/cuBLAS/cuDNN is rethrown as mokd::Error naming op and tensors.
void cuda_rethrow_with_context(const char* op, std::initializer_list<const Tensor*> tensors,
                               const std::exception& e);
template <class F>
void cuda_guarded(const char* op, std::initializer_list<const Tensor*> tensors, F&& f);

}  // namespace mokd

#include "engine/cuda/check.h"
#include "engine/cuda/op_profile.h"

namespace mokd {
template <class F>
void cuda_guarded(const char* op, std::initializer_list<const Tensor*> tensors, F&& f) {
  cuda_profile::Scope profile(op);
  try {
    f();
  } catch (const CudaError& e) {
    cuda_rethrow_with_context(op, tensors, e);
  }
}
}  // namespace mokd
