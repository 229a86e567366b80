// CPU max and average pooling in NHWC, with their backwards. Activations are stored as f32 or
// bf16 and pooled in f32; the backwards sum each input's gradient in f32 and store it once.
#include <algorithm>
#include <limits>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

// The window of output (oh, ow) clipped to the image, and the average's divisor as PyTorch
// computes it: with count_include_pad the window is clipped to the padded image only.
struct Window {
  int64_t h0, h1, w0, w1, divisor;
};

Window window(const PoolGeom& g, const Pool2dParams& p, int64_t oh, int64_t ow) {
  int64_t h0 = oh * p.stride_h - p.pad_h, w0 = ow * p.stride_w - p.pad_w;
  int64_t h1 = std::min(h0 + p.kernel_h, g.H + p.pad_h);
  int64_t w1 = std::min(w0 + p.kernel_w, g.W + p.pad_w);
  int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0), w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, g.H), w1 = std::min(w1, g.W);
  int64_t inside = std::max<int64_t>(h1 - h0, 0) * std::max<int64_t>(w1 - w0, 0);
  return {h0, h1, w0, w1, p.count_include_pad ? padded : inside};
}

}  // namespace

void CpuBackend::max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  const PoolGeom g = max_pool2d_args(DeviceType::CPU, x, p, y, argmax);
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
    int64_t* pa = argmax.data<int64_t>();
    const float ninf = -std::numeric_limits<float>::infinity();
#pragma omp parallel for collapse(2) if (y.numel() > 16384)
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        std::vector<float> best(g.C);
        std::vector<int64_t> arg(g.C);
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          Window win = window(g, p, oh, ow);
          std::fill(best.begin(), best.end(), ninf);  // padding never wins
          std::fill(arg.begin(), arg.end(), -1);
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w) {
              int64_t base = ((n * g.H + h) * g.W + w) * g.C;
              for (int64_t c = 0; c < g.C; ++c) {
                float v = load_f32(px[base + c]);
                // First maximum wins ties (as PyTorch); NaN propagates.
                if (v > best[c] || arg[c] < 0 || v != v) {
                  best[c] = v;
                  arg[c] = base + c;
                }
              }
            }
          int64_t o = ((n * g.Ho + oh) * g.Wo + ow) * g.C;
          for (int64_t c = 0; c < g.C; ++c) {
            py[o + c] = store_as<T>(best[c]);
            pa[o + c] = arg[c];
          }
        }
      }
  });
}

void CpuBackend::max_pool2d_backward(const Tensor& gy, const Tensor& argmax, Tensor& gx) {
  max_pool2d_backward_args(DeviceType::CPU, gy, argmax, gx);
  const int64_t* pa = argmax.data<int64_t>();
  const int64_t N = gx.size(0), in_per = gx.numel() / std::max<int64_t>(N, 1),
                out_per = gy.numel() / std::max<int64_t>(N, 1);
  // Each image's argmaxes point into that image only, so images are independent.
  int64_t bad = -1;  // an index outside its image (no throwing inside the parallel loop)
  with_activation_type(gy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gy.data<T>();
    T* px = gx.data<T>();
#pragma omp parallel for if (gx.numel() > 16384)
    for (int64_t n = 0; n < N; ++n) {
      std::vector<float> acc(in_per, 0.f);
      for (int64_t i = n * out_per; i < (n + 1) * out_per; ++i) {
        int64_t a = pa[i];
        if (a < n * in_per || a >= (n + 1) * in_per) {
#pragma omp atomic write
          bad = i;
          continue;
        }
        acc[a - n * in_per] += load_f32(pg[i]);
      }
      for (int64_t j = 0; j < in_per; ++j) px[n * in_per + j] = store_as<T>(acc[j]);
    }
  });
  MOKD_CHECK(bad < 0, "max_pool2d_backward: argmax ", pa[bad], " at ", bad,
             " is outside its image of ", gx.str());
}

void CpuBackend::avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const PoolGeom g = avg_pool2d_args(DeviceType::CPU, x, p, y);
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for collapse(2) if (y.numel() > 16384)
    for (int64_t n = 0; n < g.N; ++n)
      for (int64_t oh = 0; oh < g.Ho; ++oh) {
        std::vector<float> acc(g.C);
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          Window win = window(g, p, oh, ow);
          std::fill(acc.begin(), acc.end(), 0.f);
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w) {
              const T* src = px + ((n * g.H + h) * g.W + w) * g.C;
              for (int64_t c = 0; c < g.C; ++c) acc[c] += load_f32(src[c]);
            }
          float inv = win.divisor > 0 ? 1.f / static_cast<float>(win.divisor) : 0.f;
          T* dst = py + ((n * g.Ho + oh) * g.Wo + ow) * g.C;
          for (int64_t c = 0; c < g.C; ++c) dst[c] = store_as<T>(acc[c] * inv);
        }
      }
  });
}

void CpuBackend::avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) {
  const PoolGeom g = avg_pool2d_backward_args(DeviceType::CPU, gy, p, gx);
  with_activation_type(gy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* pg = gy.data<T>();
    T* px = gx.data<T>();
    // Scatter per image: windows overlap within an image, never across images.
#pragma omp parallel for if (gx.numel() > 16384)
    for (int64_t n = 0; n < g.N; ++n) {
      std::vector<float> acc(g.H * g.W * g.C, 0.f);
      float* gxn = acc.data();
      for (int64_t oh = 0; oh < g.Ho; ++oh)
        for (int64_t ow = 0; ow < g.Wo; ++ow) {
          Window win = window(g, p, oh, ow);
          if (win.divisor <= 0) continue;
          float inv = 1.f / static_cast<float>(win.divisor);
          const T* src = pg + ((n * g.Ho + oh) * g.Wo + ow) * g.C;
          for (int64_t h = win.h0; h < win.h1; ++h)
            for (int64_t w = win.w0; w < win.w1; ++w) {
              float* dst = gxn + (h * g.W + w) * g.C;
              for (int64_t c = 0; c < g.C; ++c) dst[c] += load_f32(src[c]) * inv;
            }
        }
      T* out = px + n * g.H * g.W * g.C;
      for (int64_t j = 0; j < g.H * g.W * g.C; ++j) out[j] = store_as<T>(acc[j]);
    }
  });
}

}  // namespace mokd
