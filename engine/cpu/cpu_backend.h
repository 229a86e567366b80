// The CPU backend: the readable reference implementation of every kernel in engine/backend.h.
// f32 math, Eigen for matrix products, OpenMP across rows/batch. One file per kernel family:
//   cpu_backend.cpp  memory, copies, fills, random     elementwise.cpp  unary/binary/reductions
//   gemm.cpp         matrix products                  softmax.cpp      softmax, logsumexp
//   layer_norm.cpp   layer norm                       conv.cpp         conv2d (im2col + GEMM)
//   batch_norm.cpp   batch norm                       pool.cpp         max/avg pooling
//   attention.cpp    scaled-dot-product attention     optim.cpp        Adam(W), SGD updates
#pragma once
#include "engine/backend.h"
#include "engine/error.h"
#include "engine/kernel_args.h"

namespace mokd {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }

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
};

// Kernel preconditions shared by the CPU files: f32, on the CPU, contiguous.
inline void cpu_expect_f32(const Tensor& t, const char* kernel, const char* arg) {
  expect_f32(t, DeviceType::CPU, kernel, arg);
}

}  // namespace mokd
