// Softmax, log-softmax (forward, backward) and logsumexp over the last dim: one warp per row,
// f32 values with double row sums (as the CPU reference). Memory traffic: forward reads the row
// twice (max, then sum and write; the second read mostly hits L1/L2) and writes it once; backward
// reads y and gy twice and writes gx once; logsumexp reads x twice and writes one float per row.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ float row_max(const float* r, int64_t c, int lane) {
  float m = -INFINITY;
  for (int64_t i = lane; i < c; i += 32) m = fmaxf(m, r[i]);
  // fmaxf drops NaN; the CPU's "r[i] > m ? r[i] : m" also skips NaN, so rows agree.
  return warp_max(m);
}

__global__ void softmax_kernel(const float* x, float* y, int64_t rows, int64_t c, bool log) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = x + row * c;
  float* yr = y + row * c;
  float m = row_max(xr, c, lane);
  double s = 0;
  for (int64_t i = lane; i < c; i += 32) s += expf(xr[i] - m);
  s = warp_sum(s);
  if (log) {
    float ls = static_cast<float>(::log(s));
    for (int64_t i = lane; i < c; i += 32) yr[i] = (xr[i] - m) - ls;
  } else {
    double inv = 1.0 / s;
    for (int64_t i = lane; i < c; i += 32) yr[i] = static_cast<float>(expf(xr[i] - m) * inv);
  }
}

__global__ void softmax_bwd_kernel(const float* y, const float* gy, float* gx, int64_t rows,
                                   int64_t c, bool log) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* yr = y + row * c;
  const float* gr = gy + row * c;
  float* o = gx + row * c;
  double s = 0;
  if (log) {
    for (int64_t i = lane; i < c; i += 32) s += gr[i];
  } else {
    for (int64_t i = lane; i < c; i += 32) s += static_cast<double>(gr[i]) * yr[i];
  }
  float sf = static_cast<float>(warp_sum(s));
  if (log) {
    for (int64_t i = lane; i < c; i += 32) o[i] = gr[i] - expf(yr[i]) * sf;
  } else {
    for (int64_t i = lane; i < c; i += 32) o[i] = yr[i] * (gr[i] - sf);
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

void softmax(const float* x, float* y, int64_t rows, int64_t c, bool log, cudaStream_t stream) {
  if (rows == 0 || c == 0) return;
  softmax_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(x, y, rows, c, log);
  check_launch(log ? "log_softmax" : "softmax");
}

void softmax_backward(const float* y, const float* gy, float* gx, int64_t rows, int64_t c, bool log,
                      cudaStream_t stream) {
  if (rows == 0 || c == 0) return;
  softmax_bwd_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(y, gy, gx, rows, c, log);
  check_launch(log ? "log_softmax_backward" : "softmax_backward");
}

void logsumexp(const float* x, float* out, int64_t rows, int64_t c, cudaStream_t stream) {
  if (rows == 0) return;
  logsumexp_kernel<<<row_blocks(rows), kThreads, 0, stream>>>(x, out, rows, c);
  check_launch("logsumexp");
}

}  // namespace mokd::kernels
