// The CUDA backend: every kernel of engine/backend.h on one compute stream, matching the CPU
// reference (engine/cpu). Host glue lives in engine/cuda, one file per kernel family as in
// engine/cpu; device code in kernels/*.cu. It registers itself for DeviceType::CUDA at start-up
// when a device is present, so op code never tests for CUDA.
//   cuda_backend.cpp  registration, stream, handles,  elementwise.cpp  unary/binary/reductions,
//                     memory, host copies, random                      one-hot
//   gemm.cpp          cuBLASLt matrix products         softmax.cpp      softmax, logsumexp
//   conv.cpp          cuDNN conv2d                     layer_norm.cpp   layer norm
//   batch_norm.cpp    batch norm                       pool.cpp         max/avg pooling
//   attention.cpp     scaled-dot-product attention     loss.cpp         fused cross-entropy, KL
//   optim.cpp         Adam(W), SGD, clipping helpers   caching_allocator.cpp, op_profile.cpp
//   pinned_host.cpp   cudaHostAlloc blocks and upload events for the loader's pinned batches
//
// Float kernels take f32, contiguous tensors on the GPU (as the CPU backend); the activation
// kernels (elementwise, reductions, softmax, norms, pooling; engine/kernel_args.h) also take bf16
// activations (f32 math, one rounding per stored element), and gemm bf16 operands (f32
// accumulation). Operand checks are the shared contracts of
// engine/kernel_args.h, then this backend's own limits. Errors from CUDA, cuBLAS and cuDNN surface
// as mokd::Error naming the op, the tensors and the library's error string.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <atomic>
#include <initializer_list>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/bf16.h"
#include "engine/cuda/caching_allocator.h"

namespace mokd {

namespace kernels {
struct StridedDesc;  // kernels/launch.cuh
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}
  Device device() const override { return Device::cuda(device_); }

  // Every kernel of engine/backend.h (engine/backend_kernels.inc).
#define MOKD_BACKEND_KERNEL(name, params) void name params override;
#include "engine/backend_kernels.inc"
#undef MOKD_BACKEND_KERNEL
  // Fused when cuda_fused_epilogues(), else the composition (elementwise.cpp).
  void bias_act(const Tensor& x, const Tensor& bias, const Tensor* residual, bool relu,
                Tensor& y) override;
  bool fuses_epilogues() const override;
  // Fused when cuda_fused_epilogues(), else the composition (bias_gelu.cpp, add_layer_norm.cpp).
  void bias_gelu(const Tensor& x, const Tensor& bias, Tensor& y) override;
  void bias_gelu_backward(const Tensor& g, const Tensor& x, const Tensor& bias, Tensor& gx,
                          Tensor* gbias) override;
  void add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor* w, const Tensor* b,
                      float eps, Tensor& s, Tensor& n, Tensor& mean, Tensor& rstd) override;
  void add_layer_norm_backward(const Tensor& gn, const Tensor* gs, const Tensor& s, const Tensor* w,
                               const Tensor& mean, const Tensor& rstd, Tensor& gx, Tensor* gw,
                               Tensor* gb) override;
  // Linear layers: the bias added in cuBLASLt's epilogue (the CPU takes Backend's default); a bf16
  // c (bf16 a and b) is the f32 result rounded once.
  void gemm_bias(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) override;
  void set_deferred_checks(bool on) override;
  void check_deferred() override;

  // ---- CUDA specifics ----
  // Created on first use, each on its own: the stream (non-blocking), the cuBLASLt handle, the
  // cuDNN handle bound to the stream.
  cudaStream_t stream();
  cublasLtHandle_t lt_handle();
  cudnnHandle_t cudnn_handle();
  void synchronize();
  // The GPU this backend computes on (use_cuda_device): before its first stream or handle.
  void select_device(int device);
  // A cuBLASLt workspace held for the process (from the caching allocator).
  void* lt_workspace(size_t& bytes);
  // Device scratch of n doubles: a tensor that may be dropped as soon as the kernels are queued
  // (the stream orders every later reuse of its block after them).
  Tensor scratch(int64_t n_doubles);
  // Where a label-range check of `kernel` (labels i64 [B], classes C) records the first bad row,
  // on the device, initialised to B: with deferred checks on, a slot that check_deferred() reads
  // later (a full table is checked first); off, null, and the kernel reads its own flag at once.
  int64_t* deferred_label_check(const char* kernel, const Tensor& labels, int64_t B, int64_t C,
                                std::string context);

 private:
  void init();
  int device_;
  std::atomic<bool> started_{false};
  std::once_flag once_, lt_once_, dnn_once_;
  cudaStream_t stream_ = nullptr;
  cublasLtHandle_t lt_ = nullptr;
  cudnnHandle_t dnn_ = nullptr;
  Tensor lt_ws_;
  std::mutex ws_mu_;
  // Uploads from pageable memory go through pinned buffers (copy_from_host; an upload from a
  // pinned loader block, engine/cuda/pinned_host.h, is one DMA): the host copies into one, the DMA
  // runs asynchronously on the stream, and a buffer is reused once the event recorded after its
  // last DMA has fired, so an upload (a training batch) costs no stream synchronisation. A slot
  // grows to the largest upload it has served, up to kStagingMaxBytes (bigger uploads go in
  // pieces). The buffers live as long as the process (the backend is never destroyed before exit).
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
  // Deferred label checks (set_deferred_checks): one i64 slot each in check_slots_.
  struct LabelCheck {
    const char* kernel;
    Tensor labels;
    int64_t B, C;
    std::string context;
  };
  static constexpr int64_t kCheckSlots = 1024;
  bool defer_checks_ = false;
  Tensor check_slots_;
  std::vector<LabelCheck> checks_;
  std::mutex checks_mu_;
};

// The registered backend and allocator (null when no device was found at start-up).
CudaBackend* cuda_backend();
CudaCachingAllocator* cuda_allocator();

// TF32 for f32 GEMM and convolution: off by default (f32 results within 1e-5 of the CPU); on via
// MOKD_TF32=1 at start-up or cuda_set_tf32(true) (then expect ~1e-3 relative error).
void cuda_set_tf32(bool on);
bool cuda_tf32();

// Fused epilogue kernels (bias_act, bias_gelu, add_layer_norm in one pass): off by default, so
// that the backend takes the unfused compositions (Backend::bias_act etc.) until the fused
// kernels' parity tests (CudaBiasAct.TheFusedKernelEqualsTheCpu, CudaBiasGelu.*,
// CudaAddLayerNorm.*) have passed on a GPU; on via MOKD_FUSED_EPILOGUES=1 at start-up or
// cuda_set_fused_epilogues(true).
void cuda_set_fused_epilogues(bool on);
bool cuda_fused_epilogues();

// Preconditions shared by the CUDA host files: f32 on this backend's device, contiguous.
void cuda_expect_f32(const Tensor& t, const char* kernel, const char* arg);
void cuda_expect_on_gpu(const Tensor& t, const char* kernel, const char* arg);

// Raw f32 device pointers of checked operands, for the launchers (null for an absent optional
// one). A const handle still names writable storage (the multi-tensor lists hold const handles).
inline const float* cf(const Tensor& t) { return static_cast<const float*>(t.raw_data()); }
inline float* mf(const Tensor& t) { return static_cast<float*>(t.raw_data()); }
inline const float* cf_opt(const Tensor* t) { return t ? cf(*t) : nullptr; }
inline float* mf_opt(const Tensor* t) { return t ? mf(*t) : nullptr; }
// The same for a storage type T (float or bf16) the caller has checked.
template <class T>
const T* cp(const Tensor& t) {
  return static_cast<const T*>(t.raw_data());
}
template <class T>
T* mp(const Tensor& t) {
  return static_cast<T*>(t.raw_data());
}

// A shape and the strides of up to two operands over it, as the strided kernels take them;
// throws naming kernel k past kernels::kMaxDims dims.
kernels::StridedDesc cuda_strided_desc(const char* k, const Shape& shape, const Shape& sa,
                                       const Shape& sb);

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
