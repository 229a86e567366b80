// CPU add_layer_norm (engine/backend.h): s = x + residual and n = layer_norm(s) in one pass over
// each row, and its backward gx = gs + layer_norm_backward(gn) in one pass. The row math is
// layer_norm.cpp's, statement for statement, on the stored s, so the results equal the
// composition (Backend::add_layer_norm(_backward)) bit for bit.
#include <algorithm>
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_args.h"

namespace mokd {

namespace {

template <class T>
void add_layer_norm_rows(const T* px, const T* pres, const float* pw, const float* pb, float eps,
                         int64_t rows, int64_t d, T* ps, T* pn, float* pm, float* pr) {
#pragma omp parallel for if (rows * d > 32768)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = px + r * d;
    const T* rr = pres + r * d;
    T* sr = ps + r * d;
    T* nr = pn + r * d;
    for (int64_t i = 0; i < d; ++i) sr[i] = store_as<T>(load_f32(xr[i]) + load_f32(rr[i]));
    // From here layer_norm_rows on s (still in L1).
    double s = 0;
    for (int64_t i = 0; i < d; ++i) s += load_f32(sr[i]);
    double mu = s / static_cast<double>(d);
    double v = 0;
    for (int64_t i = 0; i < d; ++i) {
      double c = load_f32(sr[i]) - mu;
      v += c * c;
    }
    v /= static_cast<double>(d);
    float m = static_cast<float>(mu);
    float rs = static_cast<float>(1.0 / std::sqrt(v + static_cast<double>(eps)));
    pm[r] = m;
    pr[r] = rs;
    for (int64_t i = 0; i < d; ++i) {
      float h = (load_f32(sr[i]) - m) * rs;
      if (pw) h *= pw[i];
      if (pb) h += pb[i];
      nr[i] = store_as<T>(h);
    }
  }
}

template <class T>
void add_layer_norm_backward_rows(const T* pg, const T* pgs, const T* px, const float* pw,
                                  const float* pm, const float* pr, int64_t rows, int64_t d, T* po,
                                  float* pgw, float* pgb) {
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
    // gs joins the stored layer-norm gradient as the tape's accumulation adds it: a loop of its
    // own, so the product above is rounded, never contracted into a multiply-add with gs.
    if (pgs) {
      const T* gsr = pgs + r * d;
      for (int64_t i = 0; i < d; ++i) orow[i] = store_as<T>(load_f32(orow[i]) + load_f32(gsr[i]));
    }
  }

  if (!pgw && !pgb) return;
  // Column sums over rows, parallel over column blocks (layer_norm.cpp's order).
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

void CpuBackend::add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor* w,
                                const Tensor* b, float eps, Tensor& s, Tensor& n, Tensor& mean,
                                Tensor& rstd) {
  const RowDims dims = add_layer_norm_args(DeviceType::CPU, x, residual, w, b, s, n, mean, rstd);
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    add_layer_norm_rows(x.data<T>(), residual.data<T>(), w ? w->data<float>() : nullptr,
                        b ? b->data<float>() : nullptr, eps, dims.rows, dims.cols, s.data<T>(),
                        n.data<T>(), mean.data<float>(), rstd.data<float>());
  });
}

void CpuBackend::add_layer_norm_backward(const Tensor& gn, const Tensor* gs, const Tensor& s,
                                         const Tensor* w, const Tensor& mean, const Tensor& rstd,
                                         Tensor& gx, Tensor* gw, Tensor* gb) {
  const RowDims dims =
      add_layer_norm_backward_args(DeviceType::CPU, gn, gs, s, w, mean, rstd, gx, gw, gb);
  with_activation_type(s.dtype(), [&](auto tag) {
    using T = decltype(tag);
    add_layer_norm_backward_rows(
        gn.data<T>(), gs ? gs->data<T>() : nullptr, s.data<T>(), w ? w->data<float>() : nullptr,
        mean.data<float>(), rstd.data<float>(), dims.rows, dims.cols, gx.data<T>(),
        gw ? gw->data<float>() : nullptr, gb ? gb->data<float>() : nullptr);
  });
}

}  // namespace mokd
