// CPU softmax, log-softmax (forward and backward) and logsumexp over the last dim.
#include <cmath>
#include <limits>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

float row_max(const float* r, int64_t c) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < c; ++i) m = r[i] > m ? r[i] : m;
  return m;
}

// sum_i exp(r[i] - m), accumulated in double so long rows keep f32 accuracy.
double row_sum_exp(const float* r, int64_t c, float m) {
  double s = 0;
  for (int64_t i = 0; i < c; ++i) s += std::exp(r[i] - m);
  return s;
}

}  // namespace

void CpuBackend::softmax(const Tensor& x, Tensor& y, bool log) {
  const RowDims d = softmax_args(DeviceType::CPU, x, y, log);
  const int64_t c = d.cols, rows = d.rows;
  const float* px = x.data<float>();
  float* py = y.data<float>();
#pragma omp parallel for if (rows * c > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * c;
    float* yr = py + r * c;
    // Subtracting the row max keeps exp() in range; a row of -inf gives NaN, as PyTorch.
    float m = row_max(xr, c);
    double s = row_sum_exp(xr, c, m);
    if (log) {
      float ls = static_cast<float>(std::log(s));
      for (int64_t i = 0; i < c; ++i) yr[i] = (xr[i] - m) - ls;
    } else {
      double inv = 1.0 / s;
      for (int64_t i = 0; i < c; ++i) yr[i] = static_cast<float>(std::exp(xr[i] - m) * inv);
    }
  }
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  const RowDims d = softmax_backward_args(DeviceType::CPU, y, gy, gx, log);
  const int64_t c = d.cols, rows = d.rows;
  const float* py = y.data<float>();
  const float* pg = gy.data<float>();
  float* po = gx.data<float>();
#pragma omp parallel for if (rows * c > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = py + r * c;
    const float* gr = pg + r * c;
    float* orow = po + r * c;
    if (log) {
      // d/dx_j of sum_i g_i (x_i - lse) = g_j - softmax_j sum_i g_i
      double s = 0;
      for (int64_t i = 0; i < c; ++i) s += gr[i];
      float sf = static_cast<float>(s);
      for (int64_t i = 0; i < c; ++i) orow[i] = gr[i] - std::exp(yr[i]) * sf;
    } else {
      // softmax Jacobian: y_j (g_j - sum_i g_i y_i)
      double s = 0;
      for (int64_t i = 0; i < c; ++i) s += static_cast<double>(gr[i]) * yr[i];
      float sf = static_cast<float>(s);
      for (int64_t i = 0; i < c; ++i) orow[i] = yr[i] * (gr[i] - sf);
    }
  }
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
