// CPU layer norm over the last dim (optional weight and bias), forward and backward.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y,
                            Tensor& mean, Tensor& rstd) {
  const RowDims dims = layer_norm_args(DeviceType::CPU, x, w, b, y, mean, rstd);
  const int64_t d = dims.cols, rows = dims.rows;
  const float* px = x.data<float>();
  const float* pw = w ? w->data<float>() : nullptr;
  const float* pb = b ? b->data<float>() : nullptr;
  float* py = y.data<float>();
  float* pm = mean.data<float>();
  float* pr = rstd.data<float>();
#pragma omp parallel for if (rows * d > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = px + r * d;
    float* yr = py + r * d;
    // Two passes in double: the mean first, then the biased variance around it (no cancellation).
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += xr[i];
    double mu = s / static_cast<double>(d);
    double v = 0;
    for (int64_t i = 0; i < d; ++i) {
      double c = xr[i] - mu;
      v += c * c;
    }
    v /= static_cast<double>(d);
    float m = static_cast<float>(mu);
    float rs = static_cast<float>(1.0 / std::sqrt(v + static_cast<double>(eps)));
    pm[r] = m;
    pr[r] = rs;
    for (int64_t i = 0; i < d; ++i) {
      float h = (xr[i] - m) * rs;
      if (pw) h *= pw[i];
      if (pb) h += pb[i];
      yr[i] = h;
    }
  }
}

void CpuBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* w,
                                     const Tensor& mean, const Tensor& rstd, Tensor& gx, Tensor* gw,
                                     Tensor* gb) {
  const RowDims dims = layer_norm_backward_args(DeviceType::CPU, gy, x, w, mean, rstd, gx, gw, gb);
  const int64_t d = dims.cols, rows = dims.rows;
  const float* pg = gy.data<float>();
  const float* px = x.data<float>();
  const float* pw = w ? w->data<float>() : nullptr;
  const float* pm = mean.data<float>();
  const float* pr = rstd.data<float>();
  float* po = gx.data<float>();

  // grad_x = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)), gh = grad_y * weight.
#pragma omp parallel for if (rows * d > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = pg + r * d;
    const float* xr = px + r * d;
    float* orow = po + r * d;
    float m = pm[r], rs = pr[r];
    double s1 = 0, s2 = 0;
    for (int64_t i = 0; i < d; ++i) {
      float gh = pw ? gr[i] * pw[i] : gr[i];
      float xh = (xr[i] - m) * rs;
      s1 += gh;
      s2 += static_cast<double>(gh) * xh;
    }
    float a = static_cast<float>(s1 / static_cast<double>(d));
    float c = static_cast<float>(s2 / static_cast<double>(d));
    for (int64_t i = 0; i < d; ++i) {
      float gh = pw ? gr[i] * pw[i] : gr[i];
      float xh = (xr[i] - m) * rs;
      orow[i] = rs * (gh - a - xh * c);
    }
  }

  if (!gw && !gb) return;
  // Column sums over rows. Parallel over column blocks (not rows) so the summation order, and so
  // the result, does not depend on the thread count.
  constexpr int64_t kBlock = 64;
  int64_t nblocks = (d + kBlock - 1) / kBlock;
  float* pgw = gw ? gw->data<float>() : nullptr;
  float* pgb = gb ? gb->data<float>() : nullptr;
#pragma omp parallel for if (rows * d > 32768)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    int64_t c0 = blk * kBlock, c1 = std::min(d, c0 + kBlock);
    double accw[kBlock] = {0}, accb[kBlock] = {0};
    for (int64_t r = 0; r < rows; ++r) {
      const float* gr = pg + r * d;
      const float* xr = px + r * d;
      float m = pm[r], rs = pr[r];
      for (int64_t i = c0; i < c1; ++i) {
        accw[i - c0] += static_cast<double>(gr[i]) * ((xr[i] - m) * rs);
        accb[i - c0] += gr[i];
      }
    }
    for (int64_t i = c0; i < c1; ++i) {
      if (pgw) pgw[i] = static_cast<float>(accw[i - c0]);
      if (pgb) pgb[i] = static_cast<float>(accb[i - c0]);
    }
  }
}

}  // namespace mokd
