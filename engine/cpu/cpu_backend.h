// The CPU backend: the readable reference implementation of every kernel in engine/backend.h.
// f32 math, Eigen for matrix products, OpenMP across rows/batch. Operand checks are the shared
// contracts of engine/kernel_args.h. One file per kernel family (engine/cuda mirrors it):
//   cpu_backend.cpp  memory, copies, fills, random     elementwise.cpp  unary/binary/reductions,
//   gemm.cpp         matrix products                                    one-hot
//   softmax.cpp      softmax, logsumexp               layer_norm.cpp   layer norm
//   conv.cpp         conv2d (im2col + GEMM)           batch_norm.cpp   batch norm
//   pool.cpp         max/avg pooling                  attention.cpp    scaled-dot-product attention
//   loss.cpp         fused cross-entropy, KL          optim.cpp        Adam(W), SGD updates
#pragma once
#include "engine/backend.h"
#include "engine/bf16.h"
#include "engine/error.h"
#include "engine/kernel_args.h"

namespace mokd {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu(); }

  // Every kernel of engine/backend.h (engine/backend_kernels.inc).
#define MOKD_BACKEND_KERNEL(name, params) void name params override;
#include "engine/backend_kernels.inc"
#undef MOKD_BACKEND_KERNEL
  // A bf16 c: the bf16 bias joins each product's f32 scratch before the one rounding (gemm.cpp).
  void gemm_bias(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) override;
  // Bias, residual and ReLU in one pass (bias_act.cpp).
  void bias_act(const Tensor& x, const Tensor& bias, const Tensor* residual, bool relu,
                Tensor& y) override;
  bool fuses_epilogues() const override { return true; }
  // Bias and GELU in one pass each way (bias_gelu.cpp).
  void bias_gelu(const Tensor& x, const Tensor& bias, Tensor& y) override;
  void bias_gelu_backward(const Tensor& g, const Tensor& x, const Tensor& bias, Tensor& gx,
                          Tensor* gbias) override;
  // Residual add and layer norm in one pass each way (add_layer_norm.cpp).
  void add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor* w, const Tensor* b,
                      float eps, Tensor& s, Tensor& n, Tensor& mean, Tensor& rstd) override;
  void add_layer_norm_backward(const Tensor& gn, const Tensor* gs, const Tensor& s, const Tensor* w,
                               const Tensor& mean, const Tensor& rstd, Tensor& gx, Tensor* gw,
                               Tensor* gb) override;
};

// Kernel preconditions shared by the CPU files: f32, on the CPU, contiguous.
inline void cpu_expect_f32(const Tensor& t, const char* kernel, const char* arg) {
  expect_f32(t, DeviceType::CPU, kernel, arg);
}

}  // namespace mokd
