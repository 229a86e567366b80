// Softmax, log-softmax (forward, backward) and logsumexp over the last dim: one warp per row,
// f32 values with double row sums (as the CPU reference). Softmax and its backward store f32 or
// bf16 activations (widened on load, each output rounded once); logsumexp is f32. Memory traffic,
// in elements of the activation type (4 or 2 bytes): forward reads the row twice (max, then sum
// and write; the second read mostly hits L1/L2) and writes it once; backward reads y and gy twice
// and writes gx once; logsumexp reads x twice and writes one float per row.
#include <cmath>

#include "engine/bf16.h"

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

constexpr int kWarps = kThreads / 32;

template <class T>
__device__ __forceinline__ float row_max(const T* r, int64_t c, int lane) {
  float m = -INFINITY;
  for (int64_t i = lane; i < c; i += 32) m = fmaxf(m, load_f32(r[i]));
  // fmaxf drops NaN; the CPU's "r[i] > m ? r[i] : m" also skips NaN, so rows agree.
  return warp_max(m);
}

template <class T>
__global__ void softmax_kernel(const T* x, T* y, int64_t rows, int64_t c, bool log) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * c;
  T* yr = y + row * c;
  float m = row_max(xr, c, lane);
  double s = 0;
  for (int64_t i = lane; i < c; i += 32) s += expf(load_f32(xr[i]) - m);
  s = warp_sum(s);
  if (log) {
    float ls = static_cast<float>(::log(s));
    for (int64_t i = lane; i < c; i += 32) yr[i] = store_as<T>((load_f32(xr[i]) - m) - ls);
  } else {
    double inv = 1.0 / s;
    for (int64_t i = lane; i < c; i += 32)
      yr[i] = store_as<T>(static_cast<float>(expf(load_f32(xr[i]) - m) * inv));
  }
}

template <class T>
__global__ void softmax_bwd_kernel(const T* y, const T* gy, T* gx, int64_t rows, int64_t c,
                                   bool log) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* yr = y + row * c;
  const T* gr = gy + row * c;
  T* o = gx + row * c;
  double s = 0;
  if (log) {
    for (int64_t i = lane; i < c; i += 32) s += load_f32(gr[i]);
  } else {
    for (int64_t i = lane; i < c; i += 32)
      s += static_cast<double>(load_f32(gr[i])) * load_f32(yr[i]);
  }
  float sf = static_cast<float>(warp_sum(s));
  if (log) {
    for (int64_t i = lane; i < c; i += 32)
      o[i] = store_as<T>(load_f32(gr[i]) - expf(load_f32(yr[i])) * sf);
  } else {
    for (int64_t i = lane; i < c; i += 32)
      o[i] = store_as<T>(load_f32(yr[i]) * (load_f32(gr[i]) - sf));
  }
}

__global__ void logsumexp_kernel(const float* x, float* out, int64_t rows, int64_t c) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = x + row * c;
  float m = row_max(xr, c, lane);
  if (!isfinite(m)) {  // all -inf (or empty): -inf; any +inf: +inf
    if (lane == 0) out[row] = m;
    return;
  }
  double s = 0;
  for (int64_t i = lane; i < c; i += 32) s += expf(xr[i] - m);
  s = warp_sum(s);
  if (lane == 0) out[row] = m + static_cast<float>(::log(s));
}

unsigned row_blocks(int64_t rows) { return static_cast<unsigned>((rows + kWarps - 1) / kWarps); }

}  // namespace

template <class T>
void softmax(const T* x, T* y, int64_t rows, int64_t c, bool log, cudaStream_t stream) {
  if (rows == 0 || c == 0) return;
  softmax_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(x, y, rows, c, log);
  check_launch(log ? "log_softmax" : "softmax");
}

template <class T>
void softmax_backward(const T* y, const T* gy, T* gx, int64_t rows, int64_t c, bool log,
                      cudaStream_t stream) {
  if (rows == 0 || c == 0) return;
  softmax_bwd_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(y, gy, gx, rows, c, log);
  check_launch(log ? "log_softmax_backward" : "softmax_backward");
}

template void softmax(const float*, float*, int64_t, int64_t, bool, cudaStream_t);
template void softmax(const bf16*, bf16*, int64_t, int64_t, bool, cudaStream_t);
template void softmax_backward(const float*, const float*, float*, int64_t, int64_t, bool,
                               cudaStream_t);
template void softmax_backward(const bf16*, const bf16*, bf16*, int64_t, int64_t, bool,
                               cudaStream_t);

void logsumexp(const float* x, float* out, int64_t rows, int64_t c, cudaStream_t stream) {
  if (rows == 0) return;
  logsumexp_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(x, out, rows, c);
  check_launch("logsumexp");
}

}  // namespace mokd::kernels
