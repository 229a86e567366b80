// CUDA conv2d through cuDNN, NHWC activations and OHWI ([O, kh, kw, I/groups]) weights: forward,
// backward data and backward weight. Algorithms come from cudnnGet*_v7 heuristics, cached per
// shape/params key. FFT and Winograd algorithms are skipped (their f32 error is far above the
// 1e-5 parity budget), and without TF32 mode only FMA-math algorithms are taken (cuDNN's default
// math, with a warning, for a shape that has none). bf16 operands (mixed precision) take cuDNN's
// BFLOAT16 configuration: bf16 x, w, y, f32 compute, tensor-core algorithms; no bias (the op adds
// it in f32).
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <unordered_map>

#include "engine/cuda/check.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

namespace {

// The shared conv2d contract plus cuDNN's int range.
ConvGeom cudnn_geom(const char* kernel, const Tensor& x, const Tensor& w, const Tensor& y,
                    const Conv2dParams& p, const Tensor* bias, bool backward_data) {
  const Shape& xs = x.shape();
  ConvGeom g = conv_args(kernel, x, w, y, p, bias, backward_data);
  const int64_t lim = INT32_MAX;
  MOKD_CHECK(g.N <= lim && g.H <= lim && g.W <= lim && g.C <= lim && g.O <= lim, kernel,
             ": sizes exceed cuDNN's int range: x ", shape_str(xs));
  return g;
}

// cuDNN descriptors for one convolution, destroyed with the object.
struct Descs {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  Descs(const ConvGeom& g, cudnnMathType_t math, DType dt) {
    const cudnnDataType_t data = dt == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    MOKD_CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    MOKD_CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    MOKD_CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    MOKD_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    MOKD_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NHWC, data, int(g.N), int(g.C),
                                                int(g.H), int(g.W)));
    MOKD_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NHWC, data, int(g.N), int(g.O),
                                                int(g.Ho), int(g.Wo)));
    // NHWC filter format = [O, kh, kw, C/groups] in memory: our OHWI layout.
    MOKD_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, data, CUDNN_TENSOR_NHWC, int(g.O), int(g.Cg),
                                                int(g.kh), int(g.kw)));
    MOKD_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, g.ph, g.pw, g.sh, g.sw, 1, 1,
                                                     CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    MOKD_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv, int(g.G)));
    MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(conv, math));
  }
  ~Descs() {
    if (conv) cudnnDestroyConvolutionDescriptor(conv);
    if (w) cudnnDestroyFilterDescriptor(w);
    if (y) cudnnDestroyTensorDescriptor(y);
    if (x) cudnnDestroyTensorDescriptor(x);
  }
  Descs(const Descs&) = delete;
  Descs& operator=(const Descs&) = delete;
};

struct Choice {
  int algo;
  cudnnMathType_t math;
  size_t workspace;
};

std::mutex g_mu;
std::unordered_map<std::string, Choice> g_cache;

std::string key_of(const char* kind, const ConvGeom& g, bool tf32, DType dt) {
  return detail::concat(kind, ':', dtype_name(dt), ':', g.N, ',', g.H, ',', g.W, ',', g.C, ',', g.O,
                        ',', g.kh, ',', g.kw, ',', g.Cg, ',', g.sh, ',', g.sw, ',', g.ph, ',', g.pw,
                        ',', g.G, ',', tf32);
}

// Picks the first heuristic result that succeeded, is not FFT/Winograd, and (without TF32) uses
// FMA math; falls back to the first successful one.
template <class Perf, class Skip>
Choice pick(const Perf* perf, int n, bool tf32, Skip skip, const char* kind) {
  const Perf* fallback = nullptr;
  for (int i = 0; i < n; ++i) {
    const Perf& p = perf[i];
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    if (!fallback) fallback = &p;
    if (skip(p.algo)) continue;
    if (!tf32 && p.mathType != CUDNN_FMA_MATH && p.mathType != CUDNN_DEFAULT_MATH) continue;
    return {static_cast<int>(p.algo), tf32 ? p.mathType : CUDNN_FMA_MATH, p.memory};
  }
  if (!fallback)
    throw CudaError(detail::concat("cuDNN has no ", kind, " algorithm for this shape"));
  return {static_cast<int>(fallback->algo), tf32 ? fallback->mathType : CUDNN_FMA_MATH,
          fallback->memory};
}

cudnnMathType_t math_mode(bool tf32, DType dt) {
  if (dt == DType::BF16) return CUDNN_TENSOR_OP_MATH;
  return tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH;
}

// query(allow_tf32) sets the descriptor's math type, asks the heuristics and picks. When no
// FMA-only algorithm exists for a shape, cuDNN's default math (TF32 on Ampere and newer) is taken
// rather than failing the op; stderr says so once per shape, since results then differ by ~1e-3.
template <class Query>
Choice pick_or_default_math(bool tf32, const std::string& key, Query query) {
  if (tf32) return query(true);
  try {
    return query(false);
  } catch (const CudaError& e) {
    Choice c = query(true);
    std::fprintf(stderr, "mokd: cuDNN has no FMA-only algorithm for %s (%s): using default math\n",
                 key.c_str(), e.what());
    return c;
  }
}

bool cached(const std::string& key, Choice& c) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_cache.find(key);
  if (it == g_cache.end()) return false;
  c = it->second;
  return true;
}

void store(const std::string& key, const Choice& c) {
  std::lock_guard<std::mutex> lock(g_mu);
  g_cache[key] = c;
}

}  // namespace

void CudaBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* bias,
                         const Conv2dParams& p, Tensor& y) {
  const DType dt =
      expect_float_operands("conv2d", DeviceType::CUDA, {{&x, "x"}, {&w, "w"}, {&y, "y"}});
  ConvGeom g = cudnn_geom("conv2d", x, w, y, p, bias, false);
  if (bias) {
    MOKD_CHECK(dt == DType::F32, "conv2d: bf16 operands take no bias (add it in f32), got ",
               bias->str());
    cuda_expect_f32(*bias, "conv2d", "bias");
    MOKD_CHECK(bias->numel() == g.O, "conv2d: bias ", bias->str(), " must have ", g.O, " elements");
  }
  if (y.numel() == 0) return;
  cuda_guarded("conv2d", {&x, &w, bias, &y}, [&] {
    if (x.numel() == 0 || w.numel() == 0) {  // empty reduction: y = bias (or 0)
      fill(y, 0.0);
    } else {
      const bool tf32 = cuda_tf32() || dt == DType::BF16;  // tensor-core math allowed
      Descs d(g, math_mode(tf32, dt), dt);
      std::string key = key_of("fwd", g, tf32, dt);
      Choice ch;
      if (!cached(key, ch)) {
        ch = pick_or_default_math(tf32, key, [&](bool allow_tf32) {
          MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, math_mode(allow_tf32, dt)));
          cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
          int n = 0;
          MOKD_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(
              cudnn_handle(), d.x, d.w, d.conv, d.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
          return pick(
              perf, n, allow_tf32,
              [](cudnnConvolutionFwdAlgo_t a) {
                return a == CUDNN_CONVOLUTION_FWD_ALGO_FFT ||
                       a == CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING ||
                       a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD ||
                       a == CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED;
              },
              "forward");
        });
        MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, ch.math));
        MOKD_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(
            cudnn_handle(), d.x, d.w, d.conv, d.y, static_cast<cudnnConvolutionFwdAlgo_t>(ch.algo),
            &ch.workspace));
        store(key, ch);
      }
      MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, ch.math));
      Tensor ws = scratch(static_cast<int64_t>((ch.workspace + 7) / 8));
      count_launch();
      const float one = 1.f, zero = 0.f;
      MOKD_CUDNN_CHECK(
          cudnnConvolutionForward(cudnn_handle(), &one, d.x, x.raw_data(), d.w, w.raw_data(),
                                  d.conv, static_cast<cudnnConvolutionFwdAlgo_t>(ch.algo),
                                  ws.raw_data(), ch.workspace, &zero, d.y, y.raw_data()));
    }
    if (bias)
      kernels::add_bias_lastdim(static_cast<float*>(y.raw_data()),
                                static_cast<const float*>(bias->raw_data()), y.numel() / g.O, g.O,
                                stream());
  });
}

void CudaBackend::conv2d_backward_data(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                                       Tensor& gx) {
  const DType dt = expect_float_operands("conv2d_backward_data", DeviceType::CUDA,
                                         {{&gy, "gy"}, {&w, "w"}, {&gx, "gx"}});
  ConvGeom g = cudnn_geom("conv2d_backward_data", gx, w, gy, p, nullptr, true);
  if (gx.numel() == 0) return;
  cuda_guarded("conv2d_backward_data", {&gy, &w, &gx}, [&] {
    if (gy.numel() == 0 || w.numel() == 0) {
      fill(gx, 0.0);
      return;
    }
    const bool tf32 = cuda_tf32() || dt == DType::BF16;  // tensor-core math allowed
    Descs d(g, math_mode(tf32, dt), dt);
    std::string key = key_of("bwd_data", g, tf32, dt);
    Choice ch;
    if (!cached(key, ch)) {
      ch = pick_or_default_math(tf32, key, [&](bool allow_tf32) {
        MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, math_mode(allow_tf32, dt)));
        cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
        int n = 0;
        MOKD_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
            cudnn_handle(), d.w, d.y, d.conv, d.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n,
            perf));
        return pick(
            perf, n, allow_tf32,
            [](cudnnConvolutionBwdDataAlgo_t a) {
              return a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT ||
                     a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_FFT_TILING ||
                     a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD ||
                     a == CUDNN_CONVOLUTION_BWD_DATA_ALGO_WINOGRAD_NONFUSED;
            },
            "backward-data");
      });
      MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, ch.math));
      MOKD_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
          cudnn_handle(), d.w, d.y, d.conv, d.x,
          static_cast<cudnnConvolutionBwdDataAlgo_t>(ch.algo), &ch.workspace));
      store(key, ch);
    }
    MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, ch.math));
    Tensor ws = scratch(static_cast<int64_t>((ch.workspace + 7) / 8));
    count_launch();
    const float one = 1.f, zero = 0.f;
    MOKD_CUDNN_CHECK(
        cudnnConvolutionBackwardData(cudnn_handle(), &one, d.w, w.raw_data(), d.y, gy.raw_data(),
                                     d.conv, static_cast<cudnnConvolutionBwdDataAlgo_t>(ch.algo),
                                     ws.raw_data(), ch.workspace, &zero, d.x, gx.raw_data()));
  });
}

void CudaBackend::conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                                         Tensor& gw) {
  const DType dt = expect_float_operands("conv2d_backward_weight", DeviceType::CUDA,
                                         {{&gy, "gy"}, {&x, "x"}, {&gw, "gw"}});
  ConvGeom g = cudnn_geom("conv2d_backward_weight", x, gw, gy, p, nullptr, false);
  if (gw.numel() == 0) return;
  cuda_guarded("conv2d_backward_weight", {&gy, &x, &gw}, [&] {
    if (gy.numel() == 0 || x.numel() == 0) {
      fill(gw, 0.0);
      return;
    }
    const bool tf32 = cuda_tf32() || dt == DType::BF16;  // tensor-core math allowed
    Descs d(g, math_mode(tf32, dt), dt);
    std::string key = key_of("bwd_filter", g, tf32, dt);
    Choice ch;
    if (!cached(key, ch)) {
      ch = pick_or_default_math(tf32, key, [&](bool allow_tf32) {
        MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, math_mode(allow_tf32, dt)));
        cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
        int n = 0;
        MOKD_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
            cudnn_handle(), d.x, d.y, d.conv, d.w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n,
            perf));
        return pick(
            perf, n, allow_tf32,
            [](cudnnConvolutionBwdFilterAlgo_t a) {
              return a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT ||
                     a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_FFT_TILING ||
                     a == CUDNN_CONVOLUTION_BWD_FILTER_ALGO_WINOGRAD_NONFUSED;
            },
            "backward-filter");
      });
      MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, ch.math));
      MOKD_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
          cudnn_handle(), d.x, d.y, d.conv, d.w,
          static_cast<cudnnConvolutionBwdFilterAlgo_t>(ch.algo), &ch.workspace));
      store(key, ch);
    }
    MOKD_CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, ch.math));
    Tensor ws = scratch(static_cast<int64_t>((ch.workspace + 7) / 8));
    count_launch();
    const float one = 1.f, zero = 0.f;
    MOKD_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
        cudnn_handle(), &one, d.x, x.raw_data(), d.y, gy.raw_data(), d.conv,
        static_cast<cudnnConvolutionBwdFilterAlgo_t>(ch.algo), ws.raw_data(), ch.workspace, &zero,
        d.w, gw.raw_data()));
  });
}

}  // namespace mokd
