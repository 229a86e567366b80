// CPU conv2d in NHWC (weights OHWI): im2col per image and group, then one Eigen GEMM.
#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <vector>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_costs.h"

namespace mokd {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using MapC = Eigen::Map<const RowMat, 0, Eigen::OuterStride<>>;
using Map = Eigen::Map<RowMat, 0, Eigen::OuterStride<>>;

// col [P, K] (row-major) for group grp of one image x [H, W, C]; out-of-bounds taps are zero.
void im2col(const ConvGeom& g, const float* x, int64_t grp, float* col) {
  const int64_t K = g.K();
  for (int64_t oh = 0; oh < g.Ho; ++oh) {
    for (int64_t ow = 0; ow < g.Wo; ++ow) {
      float* row = col + (oh * g.Wo + ow) * K;
      for (int64_t i = 0; i < g.kh; ++i) {
        int64_t ih = oh * g.sh - g.ph + i;
        for (int64_t j = 0; j < g.kw; ++j) {
          int64_t iw = ow * g.sw - g.pw + j;
          float* dst = row + (i * g.kw + j) * g.Cg;
          if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) {
            std::fill(dst, dst + g.Cg, 0.f);
          } else {
            const float* src = x + (ih * g.W + iw) * g.C + grp * g.Cg;
            std::copy(src, src + g.Cg, dst);
          }
        }
      }
    }
  }
}

// Adds col [P, K] back into the image gradient gx [H, W, C] (the adjoint of im2col).
void col2im_add(const ConvGeom& g, const float* col, int64_t grp, float* gx) {
  const int64_t K = g.K();
  for (int64_t oh = 0; oh < g.Ho; ++oh) {
    for (int64_t ow = 0; ow < g.Wo; ++ow) {
      const float* row = col + (oh * g.Wo + ow) * K;
      for (int64_t i = 0; i < g.kh; ++i) {
        int64_t ih = oh * g.sh - g.ph + i;
        if (ih < 0 || ih >= g.H) continue;
        for (int64_t j = 0; j < g.kw; ++j) {
          int64_t iw = ow * g.sw - g.pw + j;
          if (iw < 0 || iw >= g.W) continue;
          const float* src = row + (i * g.kw + j) * g.Cg;
          float* dst = gx + (ih * g.W + iw) * g.C + grp * g.Cg;
          for (int64_t c = 0; c < g.Cg; ++c) dst[c] += src[c];
        }
      }
    }
  }
}

// Parallelise over images when there are enough of them; otherwise leave the threads to Eigen's
// GEMM (Eigen runs single-threaded inside an OpenMP parallel region).
bool batch_parallel(int64_t n) { return n > 1 && n >= omp_get_max_threads(); }

// bf16 operands (mixed precision, engine/precision.h): f32 math on the (exactly widened) bf16
// values, the result rounded to bf16 on the way out: what cuDNN's bf16 convolutions compute,
// up to the order of f32 accumulation. Returns false for f32 operands.
template <class Run>
bool bf16_via_f32(const char* kernel, const Tensor& a, const char* na, const Tensor& b,
                  const char* nb, Tensor& out, const char* nout, Run run) {
  if (expect_float_operands(kernel, DeviceType::CPU, {{&a, na}, {&b, nb}, {&out, nout}}) !=
      DType::BF16)
    return false;
  NestedKernels nested;  // the caller notes the bf16 call; the widening and f32 call are its own
  Tensor af = a.to(DType::F32), bf = b.to(DType::F32);
  Tensor of = Tensor::empty(out.shape(), DType::F32, Device::cpu());
  run(af, bf, of);
  out.copy_(of);
  return true;
}

}  // namespace

void CpuBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p,
                        Tensor& y) {
  if (bf16_via_f32("conv2d", x, "x", w, "w", y, "y",
                   [&](const Tensor& xf, const Tensor& wf, Tensor& yf) {
                     MOKD_CHECK(!bias, "conv2d: bf16 operands take no bias (add it in f32), got ",
                                bias->str());
                     conv2d(xf, wf, nullptr, p, yf);
                   })) {
    conv_args("conv2d", x, w, y, p, bias, false);
    return;
  }
  cpu_expect_f32(x, "conv2d", "x");
  cpu_expect_f32(w, "conv2d", "w");
  cpu_expect_f32(y, "conv2d", "y");
  ConvGeom g = conv_args("conv2d", x, w, y, p, bias, false);
  const float* bp = nullptr;
  if (bias) {
    cpu_expect_f32(*bias, "conv2d", "bias");
    MOKD_CHECK(bias->numel() == g.O, "conv2d: bias ", bias->str(), " must have ", g.O, " elements");
    bp = bias->data<float>();
  }
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  float* py = y.data<float>();
  const int64_t K = g.K(), P = g.P();
  const bool direct = g.pointwise();

#pragma omp parallel if (batch_parallel(g.N))
  {
    std::vector<float> col(direct ? 0 : P * K);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.N; ++n) {
      const float* xn = px + n * g.H * g.W * g.C;
      float* yn = py + n * P * g.O;
      for (int64_t grp = 0; grp < g.G; ++grp) {
        const float* a = xn + grp * g.Cg;  // pointwise: x itself is the im2col matrix
        int64_t lda = g.C;
        if (!direct) {
          im2col(g, xn, grp, col.data());
          a = col.data();
          lda = K;
        }
        MapC A(a, P, K, Eigen::OuterStride<>(lda));
        MapC Wg(pw + grp * g.Og * K, g.Og, K, Eigen::OuterStride<>(K));
        Map Y(yn + grp * g.Og, P, g.Og, Eigen::OuterStride<>(g.O));
        Y.noalias() = A * Wg.transpose();
      }
      if (bp) {
        for (int64_t r = 0; r < P; ++r)
          for (int64_t o = 0; o < g.O; ++o) yn[r * g.O + o] += bp[o];
      }
    }
  }
}

void CpuBackend::conv2d_backward_data(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                                      Tensor& gx) {
  if (bf16_via_f32("conv2d_backward_data", gy, "gy", w, "w", gx, "gx",
                   [&](const Tensor& gyf, const Tensor& wf, Tensor& gxf) {
                     conv2d_backward_data(gyf, wf, p, gxf);
                   })) {
    conv_args("conv2d_backward_data", gx, w, gy, p, nullptr, true);
    return;
  }
  cpu_expect_f32(gy, "conv2d_backward_data", "gy");
  cpu_expect_f32(w, "conv2d_backward_data", "w");
  cpu_expect_f32(gx, "conv2d_backward_data", "gx");
  ConvGeom g = conv_args("conv2d_backward_data", gx, w, gy, p, nullptr, true);
  const float* pg = gy.data<float>();
  const float* pw = w.data<float>();
  float* px = gx.data<float>();
  const int64_t K = g.K(), P = g.P();
  const bool direct = g.pointwise();

#pragma omp parallel if (batch_parallel(g.N))
  {
    std::vector<float> col(direct ? 0 : P * K);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.N; ++n) {
      const float* gyn = pg + n * P * g.O;
      float* gxn = px + n * g.H * g.W * g.C;
      if (!direct) std::fill(gxn, gxn + g.H * g.W * g.C, 0.f);
      for (int64_t grp = 0; grp < g.G; ++grp) {
        MapC GY(gyn + grp * g.Og, P, g.Og, Eigen::OuterStride<>(g.O));
        MapC Wg(pw + grp * g.Og * K, g.Og, K, Eigen::OuterStride<>(K));
        if (direct) {  // the gradient of the im2col matrix is the gradient of x itself
          Map GX(gxn + grp * g.Cg, P, K, Eigen::OuterStride<>(g.C));
          GX.noalias() = GY * Wg;
        } else {
          Map GC(col.data(), P, K, Eigen::OuterStride<>(K));
          GC.noalias() = GY * Wg;
          col2im_add(g, col.data(), grp, gxn);
        }
      }
    }
  }
}

void CpuBackend::conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                                        Tensor& gw) {
  if (bf16_via_f32("conv2d_backward_weight", gy, "gy", x, "x", gw, "gw",
                   [&](const Tensor& gyf, const Tensor& xf, Tensor& gwf) {
                     conv2d_backward_weight(gyf, xf, p, gwf);
                   })) {
    conv_args("conv2d_backward_weight", x, gw, gy, p, nullptr, false);
    return;
  }
  cpu_expect_f32(gy, "conv2d_backward_weight", "gy");
  cpu_expect_f32(x, "conv2d_backward_weight", "x");
  cpu_expect_f32(gw, "conv2d_backward_weight", "gw");
  ConvGeom g = conv_args("conv2d_backward_weight", x, gw, gy, p, nullptr, false);
  const float* pg = gy.data<float>();
  const float* px = x.data<float>();
  float* pw = gw.data<float>();
  const int64_t K = g.K(), P = g.P(), WN = g.O * K;
  const bool direct = g.pointwise();
  const bool par = batch_parallel(g.N);
  const int nt = par ? omp_get_max_threads() : 1;
  // One accumulator per thread (thread 0 writes gw directly), summed afterwards: no races and
  // no atomics.
  std::vector<std::vector<float>> partial(nt > 1 ? nt - 1 : 0);
  std::fill(pw, pw + WN, 0.f);

#pragma omp parallel num_threads(nt) if (par)
  {
    int t = omp_get_thread_num();
    float* acc = pw;
    if (t > 0) {
      partial[t - 1].assign(WN, 0.f);
      acc = partial[t - 1].data();
    }
    std::vector<float> col(direct ? 0 : P * K);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.N; ++n) {
      const float* xn = px + n * g.H * g.W * g.C;
      const float* gyn = pg + n * P * g.O;
      for (int64_t grp = 0; grp < g.G; ++grp) {
        const float* a = xn + grp * g.Cg;
        int64_t lda = g.C;
        if (!direct) {
          im2col(g, xn, grp, col.data());
          a = col.data();
          lda = K;
        }
        MapC A(a, P, K, Eigen::OuterStride<>(lda));
        MapC GY(gyn + grp * g.Og, P, g.Og, Eigen::OuterStride<>(g.O));
        Map GW(acc + grp * g.Og * K, g.Og, K, Eigen::OuterStride<>(K));
        GW.noalias() += GY.transpose() * A;
      }
    }
  }
  for (auto& part : partial)
    if (!part.empty())
      for (int64_t i = 0; i < WN; ++i) pw[i] += part[i];
}

}  // namespace mokd
