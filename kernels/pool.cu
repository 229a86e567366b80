// Max and average pooling in NHWC with their backwards (same windows and divisors as
// engine/cpu/pool.cpp). Max pooling records the absolute flat index into x of each maximum (i64);
// its backward zeroes gx and scatter-adds gy there (atomics: overlapping windows). Average
// pooling's backward gathers, per input element, from every window that covers it (no atomics).
// x, y, gy and gx are f32 or bf16 activations (widened on load, each output rounded once); a bf16
// max backward scatter-adds into f32 scratch and rounds each sum once at the end. Memory traffic,
// in elements of the activation type (4 or 2 bytes): forward reads each window element (kh*kw
// reads per output, mostly cached) and writes y (and 8-byte argmax); max backward reads gy and
// argmax once and writes gx twice (zero, scatter; bf16: the f32 scratch twice, then reads it and
// writes gx once); avg backward reads the covering gy per input element and writes gx once.
#include <cfloat>
#include <type_traits>

#include "engine/bf16.h"

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

#define MOKD_GRID_STRIDE(i, n)                                                           \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

struct Win {
  int64_t h0, h1, w0, w1, divisor;
};

__device__ __forceinline__ int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ Win window(const PoolDims& g, int64_t oh, int64_t ow) {
  int64_t h0 = oh * g.sh - g.ph, w0 = ow * g.sw - g.pw;
  int64_t h1 = imin(h0 + g.kh, g.H + g.ph);
  int64_t w1 = imin(w0 + g.kw, g.W + g.pw);
  int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = imax(h0, 0), w0 = imax(w0, 0);
  h1 = imin(h1, g.H), w1 = imin(w1, g.W);
  int64_t inside = imax(h1 - h0, 0) * imax(w1 - w0, 0);
  return {h0, h1, w0, w1, g.count_include_pad ? padded : inside};
}

// One thread per output element (n, oh, ow, c): neighbouring threads read neighbouring channels.
template <class T>
__global__ void max_pool_kernel(const T* x, T* y, int64_t* arg, PoolDims g, int64_t n) {
  MOKD_GRID_STRIDE(i, n) {
    int64_t c = i % g.C, t = i / g.C;
    int64_t ow = t % g.Wo;
    t /= g.Wo;
    int64_t oh = t % g.Ho, b = t / g.Ho;
    Win win = window(g, oh, ow);
    float best = -INFINITY;
    int64_t a = -1;
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w) {
        int64_t idx = ((b * g.H + h) * g.W + w) * g.C + c;
        float v = load_f32(x[idx]);
        if (v > best || a < 0 || v != v) {  // first maximum wins; NaN propagates (as the CPU)
          best = v;
          a = idx;
        }
      }
    y[i] = store_as<T>(best);  // a value of x (or -inf): exact in T
    arg[i] = a;
  }
}

__global__ void zero_kernel(float* p, int64_t n) { MOKD_GRID_STRIDE(i, n) p[i] = 0.f; }

template <class T>
__global__ void max_pool_bwd_kernel(const T* gy, const int64_t* arg, float* gx, int64_t ny,
                                    int64_t nx) {
  MOKD_GRID_STRIDE(i, ny) {
    int64_t a = arg[i];
    if (a >= 0 && a < nx) atomicAdd(gx + a, load_f32(gy[i]));
  }
}

__global__ void round_to_bf16_kernel(const float* in, bf16* out, int64_t n) {
  MOKD_GRID_STRIDE(i, n) out[i] = store_as<bf16>(in[i]);
}

template <class T>
__global__ void avg_pool_kernel(const T* x, T* y, PoolDims g, int64_t n) {
  MOKD_GRID_STRIDE(i, n) {
    int64_t c = i % g.C, t = i / g.C;
    int64_t ow = t % g.Wo;
    t /= g.Wo;
    int64_t oh = t % g.Ho, b = t / g.Ho;
    Win win = window(g, oh, ow);
    float acc = 0.f;
    for (int64_t h = win.h0; h < win.h1; ++h)
      for (int64_t w = win.w0; w < win.w1; ++w)
        acc += load_f32(x[((b * g.H + h) * g.W + w) * g.C + c]);
    float inv = win.divisor > 0 ? 1.f / static_cast<float>(win.divisor) : 0.f;
    y[i] = store_as<T>(acc * inv);
  }
}

// Output rows oh whose window [oh*s - p, oh*s - p + k) contains h: oh in [lo, hi].
__device__ __forceinline__ void covering(int64_t h, int k, int s, int p, int64_t Ho, int64_t& lo,
                                         int64_t& hi) {
  int64_t num = h + p - k + 1;  // oh*s >= h + p - k + 1
  lo = num <= 0 ? 0 : (num + s - 1) / s;
  hi = (h + p) / s;  // oh*s <= h + p
  if (hi > Ho - 1) hi = Ho - 1;
}

template <class T>
__global__ void avg_pool_bwd_kernel(const T* gy, T* gx, PoolDims g, int64_t n) {
  MOKD_GRID_STRIDE(i, n) {
    int64_t c = i % g.C, t = i / g.C;
    int64_t w = t % g.W;
    t /= g.W;
    int64_t h = t % g.H, b = t / g.H;
    int64_t oh0, oh1, ow0, ow1;
    covering(h, g.kh, g.sh, g.ph, g.Ho, oh0, oh1);
    covering(w, g.kw, g.sw, g.pw, g.Wo, ow0, ow1);
    float acc = 0.f;
    for (int64_t oh = oh0; oh <= oh1; ++oh)
      for (int64_t ow = ow0; ow <= ow1; ++ow) {
        Win win = window(g, oh, ow);
        if (win.divisor <= 0) continue;
        // The clipped window still contains (h, w): h is inside the image.
        acc += load_f32(gy[((b * g.Ho + oh) * g.Wo + ow) * g.C + c]) *
               (1.f / static_cast<float>(win.divisor));
      }
    gx[i] = store_as<T>(acc);
  }
}

}  // namespace

template <class T>
void max_pool2d(const T* x, T* y, int64_t* argmax, const PoolDims& g, cudaStream_t stream) {
  int64_t n = g.N * g.Ho * g.Wo * g.C;
  if (n == 0) return;
  max_pool_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, y, argmax, g, n);
  check_launch("max_pool2d");
}

template <class T>
void max_pool2d_backward(const T* gy, const int64_t* argmax, T* gx, int64_t ny, int64_t nx,
                         float* acc, cudaStream_t stream) {
  if (nx == 0) return;
  // f32 gx takes the sums directly; bf16 gx gets them from acc, rounded once.
  float* sums = nullptr;
  if constexpr (std::is_same_v<T, float>)
    sums = gx;
  else
    sums = acc;
  zero_kernel<<<grid_for(nx), kThreads, 0, stream>>>(sums, nx);
  check_launch("max_pool2d_backward");
  if (ny > 0) {
    max_pool_bwd_kernel<<<grid_for(ny), kThreads, 0, stream>>>(gy, argmax, sums, ny, nx);
    check_launch("max_pool2d_backward");
  }
  if constexpr (!std::is_same_v<T, float>) {
    round_to_bf16_kernel<<<grid_for(nx), kThreads, 0, stream>>>(sums, gx, nx);
    check_launch("max_pool2d_backward");
  }
}

template <class T>
void avg_pool2d(const T* x, T* y, const PoolDims& g, cudaStream_t stream) {
  int64_t n = g.N * g.Ho * g.Wo * g.C;
  if (n == 0) return;
  avg_pool_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, y, g, n);
  check_launch("avg_pool2d");
}

template <class T>
void avg_pool2d_backward(const T* gy, T* gx, const PoolDims& g, cudaStream_t stream) {
  int64_t n = g.N * g.H * g.W * g.C;
  if (n == 0) return;
  avg_pool_bwd_kernel<<<grid_for(n), kThreads, 0, stream>>>(gy, gx, g, n);
  check_launch("avg_pool2d_backward");
}

#define MOKD_POOL_INSTANTIATE(T)                                                            \
  template void max_pool2d(const T*, T*, int64_t*, const PoolDims&, cudaStream_t);          \
  template void max_pool2d_backward(const T*, const int64_t*, T*, int64_t, int64_t, float*, \
                                    cudaStream_t);                                          \
  template void avg_pool2d(const T*, T*, const PoolDims&, cudaStream_t);                    \
  template void avg_pool2d_backward(const T*, T*, const PoolDims&, cudaStream_t);
MOKD_POOL_INSTANTIATE(float)
MOKD_POOL_INSTANTIATE(bf16)
#undef MOKD_POOL_INSTANTIATE

}  // namespace mokd::kernels
