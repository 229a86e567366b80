// CPU softmax, log-softmax (forward and backward) and logsumexp over the last dim.
#include <cmath>
#include <limits>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

template <class T>
float row_max(const T* r, int64_t c) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < c; ++i) m = load_f32(r[i]) > m ? load_f32(r[i]) : m;
  return m;
}

// sum_i exp(r[i] - m), accumulated in double so long rows keep f32 accuracy.
template <class T>
double row_sum_exp(const T* r, int64_t c, float m) {
  double s = 0;
  for (int64_t i = 0; i < c; ++i) s += std::exp(load_f32(r[i]) - m);
  return s;
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, Tensor& y, bool log) {
  const RowDims d = softmax_args(DeviceType::CPU, x, y, log);
  const int64_t c = d.cols, rows = d.rows;
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for if (rows * c > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = px + r * c;
      T* yr = py + r * c;
      // Subtracting the row max keeps exp() in range; a row of -inf gives NaN, as PyTorch.
      float m = row_max(xr, c);
      double s = row_sum_exp(xr, c, m);
      if (log) {
        float ls = static_cast<float>(std::log(s));
        for (int64_t i = 0; i < c; ++i) yr[i] = store_as<T>((load_f32(xr[i]) - m) - ls);
      } else {
        double inv = 1.0 / s;
        for (int64_t i = 0; i < c; ++i)
          yr[i] = store_as<T>(static_cast<float>(std::exp(load_f32(xr[i]) - m) * inv));
      }
    }
  });
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  const RowDims d = softmax_backward_args(DeviceType::CPU, y, gy, gx, log);
  const int64_t c = d.cols, rows = d.rows;
  with_activation_type(y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* py = y.data<T>();
    const T* pg = gy.data<T>();
    T* po = gx.data<T>();
#pragma omp parallel for if (rows * c > 32768)
    for (int64_t r = 0; r < rows; ++r) {
      const T* yr = py + r * c;
      const T* gr = pg + r * c;
      T* orow = po + r * c;
      if (log) {
        // d/dx_j of sum_i g_i (x_i - lse) = g_j - softmax_j sum_i g_i
        double s = 0;
        for (int64_t i = 0; i < c; ++i) s += load_f32(gr[i]);
        float sf = static_cast<float>(s);
        for (int64_t i = 0; i < c; ++i)
          orow[i] = store_as<T>(load_f32(gr[i]) - std::exp(load_f32(yr[i])) * sf);
      } else {
        // softmax Jacobian: y_j (g_j - sum_i g_i y_i)
        double s = 0;
        for (int64_t i = 0; i < c; ++i) s += static_cast<double>(load_f32(gr[i])) * load_f32(yr[i]);
        float sf = static_cast<float>(s);
        for (int64_t i = 0; i < c; ++i)
          orow[i] = store_as<T>(load_f32(yr[i]) * (load_f32(gr[i]) - sf));
      }
    }
  });
}

void CpuBackend::logsumexp(const Tensor& x, Tensor& out) {
  const RowDims d = logsumexp_args(DeviceType::CPU, x, out);
  const int64_t c = d.cols, rows = d.rows;
  const float* px = x.data<float>();
  float* po = out.data<float>();
#pragma omp parallel for if (rows * c > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * c;
    float m = row_max(xr, c);
    // All -inf (or an empty row) gives -inf, +inf gives +inf: exp(x - m) would be NaN there.
    if (!std::isfinite(m)) {
      po[r] = m;
      continue;
    }
    po[r] = m + static_cast<float>(std::log(row_sum_exp(xr, c, m)));
  }
}

}  // namespace mokd
