// CPU bias_act (engine/backend.h): y = relu?(x + bias (+ residual)) in one pass, f32 math, one
// rounding on store. Its oracle is Backend::bias_act, the unfused composition.
#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_args.h"

namespace mokd {

namespace {

template <class T>
void bias_act_rows(const T* x, const float* bias, const T* residual, bool relu, T* y, int64_t rows,
                   int64_t c) {
#pragma omp parallel for if (rows * c > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * c;
    for (int64_t j = 0; j < c; ++j) {
      float v = load_f32(x[o + j]) + bias[j];
      if (residual) v += load_f32(residual[o + j]);
      if (relu) v = v > 0.f ? v : 0.f;
      y[o + j] = store_as<T>(v);
    }
  }
}

}  // namespace

void CpuBackend::bias_act(const Tensor& x, const Tensor& bias, const Tensor* residual, bool relu,
                          Tensor& y) {
  bias_act_args(DeviceType::CPU, x, bias, residual, y);
  const int64_t c = bias.numel();
  if (c == 0 || x.numel() == 0) return;
  with_activation_type(x.dtype(), [&](auto t) {
    using T = decltype(t);
    bias_act_rows(static_cast<const T*>(x.raw_data()), bias.data<float>(),
                  residual ? static_cast<const T*>(residual->raw_data()) : nullptr, relu,
                  static_cast<T*>(y.raw_data()), x.numel() / c, c);
  });
}

}  // namespace mokd
