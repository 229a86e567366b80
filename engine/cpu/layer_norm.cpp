// CPU layer norm over the last dim (optional weight and bias), forward and backward. Activations
// (x, y, grad_y, grad_x) are stored as f32 or bf16; statistics, parameters and their gradients
// are f32, and so is the math.
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

template <class T>
void layer_norm_rows(const T* px, const float* pw, const float* pb, float eps, int64_t rows,
                     int64_t d, T* py, float* pm, float* pr) {
#pragma omp parallel for if (rows * d > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = px + r * d;
    T* yr = py + r * d;
    // Two passes in double: the mean first, then the biased variance around it (no cancellation).
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += load_f32(xr[i]);
    double mu = s / static_cast<double>(d);
    double v = 0;
    for (int64_t i = 0; i < d; ++i) {
      double c = load_f32(xr[i]) - mu;
      v += c * c;
    }
    v /= static_cast<double>(d);
    float m = static_cast<float>(mu);
    float rs = static_cast<float>(1.0 / std::sqrt(v + static_cast<double>(eps)));
    pm[r] = m;
    pr[r] = rs;
    for (int64_t i = 0; i < d; ++i) {
      float h = (load_f32(xr[i]) - m) * rs;
      if (pw) h *= pw[i];
      if (pb) h += pb[i];
      yr[i] = store_as<T>(h);
    }
  }
}

template <class T>
void layer_norm_backward_rows(const T* pg, const T* px, const float* pw, const float* pm,
                              const float* pr, int64_t rows, int64_t d, T* po, float* pgw,
                              float* pgb) {
  // grad_x = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)), gh = grad_y * weight.
#pragma omp parallel for if (rows * d > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const T* gr = pg + r * d;
    const T* xr = px + r * d;
    T* orow = po + r * d;
    float m = pm[r], rs = pr[r];
    double s1 = 0, s2 = 0;
    for (int64_t i = 0; i < d; ++i) {
      float gh = pw ? load_f32(gr[i]) * pw[i] : load_f32(gr[i]);
      float xh = (load_f32(xr[i]) - m) * rs;
      s1 += gh;
      s2 += static_cast<double>(gh) * xh;
    }
    float a = static_cast<float>(s1 / static_cast<double>(d));
    float c = static_cast<float>(s2 / static_cast<double>(d));
    for (int64_t i = 0; i < d; ++i) {
      float gh = pw ? load_f32(gr[i]) * pw[i] : load_f32(gr[i]);
      float xh = (load_f32(xr[i]) - m) * rs;
      orow[i] = store_as<T>(rs * (gh - a - xh * c));
    }
  }

  if (!pgw && !pgb) return;
  // Column sums over rows. Parallel over column blocks (not rows) so the summation order, and so
  // the result, does not depend on the thread count.
  constexpr int64_t kBlock = 64;
  int64_t nblocks = (d + kBlock - 1) / kBlock;
#pragma omp parallel for if (rows * d > 32768)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    int64_t c0 = blk * kBlock, c1 = std::min(d, c0 + kBlock);
    double accw[kBlock] = {0}, accb[kBlock] = {0};
    for (int64_t r = 0; r < rows; ++r) {
      const T* gr = pg + r * d;
      const T* xr = px + r * d;
      float m = pm[r], rs = pr[r];
      for (int64_t i = c0; i < c1; ++i) {
        accw[i - c0] += static_cast<double>(load_f32(gr[i])) * ((load_f32(xr[i]) - m) * rs);
        accb[i - c0] += load_f32(gr[i]);
      }
    }
    for (int64_t i = c0; i < c1; ++i) {
      if (pgw) pgw[i] = static_cast<float>(accw[i - c0]);
      if (pgb) pgb[i] = static_cast<float>(accb[i - c0]);
    }
  }
}

}  // namespace

void CpuBackend::layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y,
                            Tensor& mean, Tensor& rstd) {
  const RowDims dims = layer_norm_args(DeviceType::CPU, x, w, b, y, mean, rstd);
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    layer_norm_rows(x.data<T>(), w ? w->data<float>() : nullptr, b ? b->data<float>() : nullptr,
                    eps, dims.rows, dims.cols, y.data<T>(), mean.data<float>(), rstd.data<float>());
  });
}

void CpuBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* w,
                                     const Tensor& mean, const Tensor& rstd, Tensor& gx, Tensor* gw,
                                     Tensor* gb) {
  const RowDims dims = layer_norm_backward_args(DeviceType::CPU, gy, x, w, mean, rstd, gx, gw, gb);
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    layer_norm_backward_rows(gy.data<T>(), x.data<T>(), w ? w->data<float>() : nullptr,
                             mean.data<float>(), rstd.data<float>(), dims.rows, dims.cols,
                             gx.data<T>(), gw ? gw->data<float>() : nullptr,
                             gb ? gb->data<float>() : nullptr);
  });
}

}  // namespace mokd
