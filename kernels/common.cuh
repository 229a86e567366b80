// Device helpers shared by the kernels: grid sizing, warp reductions, and the two-stage column
// reduction over a row-major [rows, C] matrix (per-block partial sums in double, then a fixed-order
// sum per column: deterministic, no atomics).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/cuda/check.h"

namespace mokd::kernels {

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t n, int threads = kThreads) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  // Grid-stride loops cover the rest; 2^20 blocks keep every SM busy.
  return static_cast<unsigned>(b > (1 << 20) ? (1 << 20) : b);
}

template <class T>
__device__ __forceinline__ T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Strided element-wise kernels index through a StridedDesc (kernels/launch.cuh). Merging the
// dims both operands walk contiguously (and dropping size-1 dims) before the launch leaves fewer
// div/mod steps per element: a contiguous pair becomes rank 1.
template <class Desc>
inline void collapse_dims(Desc& d) {
  int r = 0;
  for (int k = 0; k < d.rank; ++k) {
    if (d.shape[k] == 1) continue;
    if (r > 0 && d.sa[r - 1] == d.sa[k] * d.shape[k] && d.sb[r - 1] == d.sb[k] * d.shape[k]) {
      d.shape[r - 1] *= d.shape[k];
      d.sa[r - 1] = d.sa[k];
      d.sb[r - 1] = d.sb[k];
      continue;
    }
    d.shape[r] = d.shape[k];
    d.sa[r] = d.sa[k];
    d.sb[r] = d.sb[k];
    ++r;
  }
  d.rank = r;
}

// Element offsets of linear index i in the two operands of d. I = uint32_t when every index fits
// (32-bit div/mod are several times cheaper than 64-bit ones on the GPU).
template <class I, class Desc>
__device__ __forceinline__ void strided_offsets(const Desc& d, int64_t i, int64_t& oa,
                                                int64_t& ob) {
  I rem = static_cast<I>(i);
  oa = 0;
  ob = 0;
  for (int k = d.rank - 1; k >= 0; --k) {
    const I n = static_cast<I>(d.shape[k]);
    const I idx = rem % n;
    rem /= n;
    oa += static_cast<int64_t>(idx) * d.sa[k];
    ob += static_cast<int64_t>(idx) * d.sb[k];
  }
}

// Column reduction: grid (ceil(C / 32), S), block (32, 8). Block (cx, s) sums f(r, c) over the rows
// of chunk s for 32 columns and writes partials[s * C + c].
constexpr int kColChunks = 64;

inline int col_chunks(int64_t rows) {
  int64_t s = (rows + 255) / 256;  // at least 256 rows per chunk
  if (s < 1) s = 1;
  return static_cast<int>(s > kColChunks ? kColChunks : s);
}

template <class F>
__global__ void col_partials_kernel(int64_t rows, int64_t C, int S, F f, double* partials) {
  __shared__ double sm[8][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int s = blockIdx.y;
  const int64_t per = (rows + S - 1) / S;
  const int64_t r0 = s * per, r1 = r0 + per < rows ? r0 + per : rows;
  double acc = 0;
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc += f(r, c);
  sm[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double t = 0;
    for (int i = 0; i < 8; ++i) t += sm[i][threadIdx.x];
    partials[static_cast<int64_t>(s) * C + c] = t;
  }
}

// out[c] = sum_s partials[s * C + c] (one thread per column)
static __global__ void col_finish_kernel(const double* partials, int S, int64_t C, double* out) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double t = 0;
    for (int s = 0; s < S; ++s) t += partials[static_cast<int64_t>(s) * C + c];
    out[c] = t;
  }
}

// Doubles of scratch col_reduce needs: partials plus the C results.
inline int64_t col_scratch_size(int64_t rows, int64_t C) { return (col_chunks(rows) + 1) * C; }

// out = partials + col_chunks(rows) * C is a convenient place for the C column sums.
template <class F>
void col_reduce(int64_t rows, int64_t C, F f, double* partials, double* out, cudaStream_t stream,
                const char* name) {
  if (C == 0) return;
  int S = col_chunks(rows);
  dim3 grid(static_cast<unsigned>((C + 31) / 32), S), block(32, 8);
  col_partials_kernel<<<grid, block, 0, stream>>>(rows, C, S, f, partials);
  check_launch(name);
  col_finish_kernel<<<grid_for(C), kThreads, 0, stream>>>(partials, S, C, out);
  check_launch(name);
}

}  // namespace mokd::kernels
