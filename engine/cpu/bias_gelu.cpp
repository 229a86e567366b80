// CPU bias_gelu (engine/backend.h): y = gelu(x + bias) in one pass, and its backward (gx and the
// bias's column sums) in one pass. The formulas are elementwise.cpp's erf GELU; a bf16 x + bias is
// rounded before the GELU and the column sums run in double in row order, as the composition's
// add, gelu and reduce_sum do, so the result equals Backend::bias_gelu(_backward) bit for bit.
#include <algorithm>
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_args.h"

namespace mokd {

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

// The GELU's input as the composition stores it (rounded to T).
template <class T>
inline float gelu_input(T x, float b) {
  return load_f32(store_as<T>(load_f32(x) + b));
}

template <class T>
void bias_gelu_rows(const T* x, const float* bias, T* y, int64_t rows, int64_t c) {
#pragma omp parallel for if (rows * c > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * c;
    for (int64_t j = 0; j < c; ++j) {
      const float h = gelu_input(x[o + j], bias[j]);
      y[o + j] = store_as<T>(0.5f * h * (1.f + std::erf(h * kInvSqrt2)));
    }
  }
}

template <class T>
inline T gelu_grad(T g, T x, float b) {
  const float h = gelu_input(x, b);
  const float cdf = 0.5f * (1.f + std::erf(h * kInvSqrt2));
  return store_as<T>(load_f32(g) * (cdf + h * kInvSqrt2Pi * std::exp(-0.5f * h * h)));
}

template <class T>
void bias_gelu_backward_rows(const T* g, const T* x, const float* bias, T* gx, float* gbias,
                             int64_t rows, int64_t c) {
  if (!gbias) {
#pragma omp parallel for if (rows * c > 65536)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = r * c; j < (r + 1) * c; ++j) gx[j] = gelu_grad(g[j], x[j], bias[j % c]);
    return;
  }
  // Parallel over column blocks, each walking every row: gx is written and its column sums
  // accumulated in the same pass, in row order whatever the thread count.
  constexpr int64_t kBlock = 64;
  const int64_t nblocks = (c + kBlock - 1) / kBlock;
#pragma omp parallel for if (rows * c > 65536)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t c0 = blk * kBlock, c1 = std::min(c, c0 + kBlock);
    double acc[kBlock] = {0};
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t o = r * c;
      for (int64_t j = c0; j < c1; ++j) {
        gx[o + j] = gelu_grad(g[o + j], x[o + j], bias[j]);
        acc[j - c0] += load_f32(gx[o + j]);
      }
    }
    for (int64_t j = c0; j < c1; ++j) gbias[j] = static_cast<float>(acc[j - c0]);
  }
}

}  // namespace

void CpuBackend::bias_gelu(const Tensor& x, const Tensor& bias, Tensor& y) {
  const RowDims d = bias_gelu_args(DeviceType::CPU, x, bias, y);
  with_activation_type(x.dtype(), [&](auto t) {
    using T = decltype(t);
    bias_gelu_rows(x.data<T>(), bias.data<float>(), y.data<T>(), d.rows, d.cols);
  });
}

void CpuBackend::bias_gelu_backward(const Tensor& g, const Tensor& x, const Tensor& bias,
                                    Tensor& gx, Tensor* gbias) {
  const RowDims d = bias_gelu_backward_args(DeviceType::CPU, g, x, bias, gx, gbias);
  with_activation_type(x.dtype(), [&](auto t) {
    using T = decltype(t);
    bias_gelu_backward_rows(g.data<T>(), x.data<T>(), bias.data<float>(), gx.data<T>(),
                            gbias ? gbias->data<float>() : nullptr, d.rows, d.cols);
  });
}

}  // namespace mokd
