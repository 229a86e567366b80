// Reductions: sum over all elements (two stages through fixed per-block partials), row sums
// (warp per row), column sums (kernels/common.cuh), any other pattern (thread per output element),
// sum of squares accumulated into a scalar, argmax over the last dim, one-hot. Accumulation is in
// double, like the CPU reference; the sums read f32 or bf16 x (widened exactly) and store f32 or
// bf16 (rounded once from the f32 result). Memory traffic: each reads its input once (4 or 2
// bytes per element); outputs are small (the nothing-reduced conversion writes one per element).
#include <cfloat>

#include "engine/bf16.h"

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

constexpr int kAllBlocks = kReducePartials;

// Stage 1: block b sums (or sums the squares of) a grid-stride slice into partials[b].
template <bool SQUARE, class TX>
__global__ void reduce_all_stage1(const TX* x, int64_t n, double* partials) {
  __shared__ double sm[kThreads / 32];
  double acc = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double v = load_f32(x[i]);
    acc += SQUARE ? v * v : v;
  }
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < kThreads / 32; ++w) t += sm[w];
    partials[blockIdx.x] = t;
  }
}

// Stage 2: one block sums the partials in a fixed order.
template <class TO>
__global__ void reduce_all_stage2(const double* partials, int nb, TO* out, float scale,
                                  bool accumulate) {
  __shared__ double sm[kThreads / 32];
  double acc = 0;
  for (int i = threadIdx.x; i < nb; i += blockDim.x) acc += partials[i];
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double t = 0;
    for (int w = 0; w < kThreads / 32; ++w) t += sm[w];
    if (accumulate)
      out[0] = store_as<TO>(load_f32(out[0]) + static_cast<float>(t));
    else
      out[0] = store_as<TO>(static_cast<float>(t * scale));
  }
}

// One warp per row.
template <class TX, class TO>
__global__ void reduce_rows_kernel(const TX* x, int64_t rows, int64_t inner, TO* out, float scale) {
  int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const TX* xr = x + row * inner;
  double acc = 0;
  for (int64_t i = lane; i < inner; i += 32) acc += load_f32(xr[i]);
  acc = warp_sum(acc);
  if (lane == 0) out[row] = store_as<TO>(static_cast<float>(acc * scale));
}

template <class TO>
__global__ void scale_to_float(const double* in, TO* out, int64_t n, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = store_as<TO>(static_cast<float>(in[i] * scale));
}

// The product of two floats is exact in double, so this equals the f32 product scale * x (what
// the unary Scale kernel computes when nothing is reduced and x and out share a dtype).
template <class TX, class TO>
__global__ void scale_convert_kernel(const TX* x, TO* out, int64_t n, float scale) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = store_as<TO>(scale * load_f32(x[i]));
}

// One thread per output element: walks the reduced sub-space of x (dims where out's stride is 0).
// Neighbouring outputs usually differ in a kept inner dim, so the reads coalesce.
template <class TX, class TO>
__global__ void reduce_generic_kernel(const TX* x, TO* out, int64_t on, StridedDesc d,
                                      StridedDesc od, int64_t reduced, float scale) {
  // od.shape: out's shape; od.sa: x strides restricted to kept dims (for locating the base);
  // od.sb: x strides of reduced dims (0 where kept); d.shape: x's shape.
  for (int64_t o = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; o < on;
       o += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t rem = o, base = 0;
    for (int k = od.rank - 1; k >= 0; --k) {
      int64_t idx = rem % od.shape[k];
      rem /= od.shape[k];
      base += idx * od.sa[k];
    }
    double acc = 0;
    for (int64_t r = 0; r < reduced; ++r) {
      int64_t rr = r, off = base;
      for (int k = d.rank - 1; k >= 0; --k) {
        if (od.sb[k] == 0) continue;  // kept dim
        int64_t idx = rr % d.shape[k];
        rr /= d.shape[k];
        off += idx * od.sb[k];
      }
      acc += load_f32(x[off]);
    }
    out[o] = store_as<TO>(static_cast<float>(acc * scale));
  }
}

// One warp per row; the first maximum wins ties (as the CPU); NaN compares false and is skipped.
__global__ void argmax_kernel(const float* x, int64_t rows, int64_t c, int64_t* out) {
  int64_t row = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = x + row * c;
  // CPU rule: best starts at element 0 and moves only to a strictly greater value. So a NaN at 0
  // wins, other NaNs never do, and otherwise the answer is the first index of the maximum.
  float best = 0.f;
  int64_t bi = 0;
  int have = 0;
  for (int64_t i = lane; i < c; i += 32) {
    float v = xr[i];
    if (v != v) continue;
    if (!have || v > best) {
      best = v;
      bi = i;
      have = 1;
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    float ob = __shfl_xor_sync(0xffffffffu, best, o);
    int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    int ohave = __shfl_xor_sync(0xffffffffu, have, o);
    if (ohave && (!have || ob > best || (ob == best && oi < bi))) {
      best = ob;
      bi = oi;
      have = 1;
    }
  }
  if (xr[0] != xr[0]) bi = 0;
  if (lane == 0) out[row] = bi;
}

__global__ void one_hot_kernel(const int64_t* labels, int64_t B, int64_t C, float on, float off,
                               float* out, unsigned long long* bad) {
  int64_t n = B * C;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t b = i / C, c = i % C;
    int64_t l = labels[b];
    if (l < 0 || l >= C) {
      if (c == 0) atomicMin(bad, static_cast<unsigned long long>(b));
    }
    out[i] = (c == l) ? on : off;
  }
}

}  // namespace

template <class TX, class TO>
void reduce_all(const TX* x, int64_t n, TO* out, float scale, bool accumulate_squares,
                double* partials, cudaStream_t stream) {
  int64_t want = (n + kThreads * 4 - 1) / (kThreads * 4);
  int nb = static_cast<int>(want < 1 ? 1 : (want > kAllBlocks ? kAllBlocks : want));
  if (accumulate_squares)
    reduce_all_stage1<true><<<nb, kThreads, 0, stream>>>(x, n, partials);
  else
    reduce_all_stage1<false><<<nb, kThreads, 0, stream>>>(x, n, partials);
  check_launch(accumulate_squares ? "sum_squares_accumulate" : "reduce_sum");
  reduce_all_stage2<<<1, kThreads, 0, stream>>>(partials, nb, out, scale, accumulate_squares);
  check_launch(accumulate_squares ? "sum_squares_accumulate" : "reduce_sum");
}

template <class TX, class TO>
void reduce_rows(const TX* x, int64_t rows, int64_t inner, TO* out, float scale,
                 cudaStream_t stream) {
  if (rows == 0) return;
  constexpr int kWarps = kThreads / 32;
  reduce_rows_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      x, rows, inner, out, scale);
  check_launch("reduce_sum");
}

int64_t col_partials_size(int64_t rows, int64_t cols) { return col_scratch_size(rows, cols); }

template <class TX, class TO>
void reduce_cols(const TX* x, int64_t rows, int64_t cols, TO* out, float scale, double* partials,
                 cudaStream_t stream) {
  if (cols == 0) return;
  double* sums = partials + static_cast<int64_t>(col_chunks(rows)) * cols;
  col_reduce(
      rows, cols,
      [=] __device__(int64_t r, int64_t c) -> double { return load_f32(x[r * cols + c]); },
      partials, sums, stream, "reduce_sum");
  scale_to_float<<<grid_for(cols), kThreads, 0, stream>>>(sums, out, cols, scale);
  check_launch("reduce_sum");
}

template <class TX, class TO>
void reduce_generic(const TX* x, TO* out, int64_t on, const StridedDesc& d,
                    const int64_t* out_shape, float scale, cudaStream_t stream) {
  if (on == 0) return;
  StridedDesc od;
  od.rank = d.rank;
  int64_t reduced = 1;
  for (int k = 0; k < d.rank; ++k) {
    od.shape[k] = out_shape[k];
    bool kept = out_shape[k] == d.shape[k];
    od.sa[k] = kept ? d.sa[k] : 0;
    od.sb[k] = kept ? 0 : d.sa[k];
    if (!kept) reduced *= d.shape[k];
  }
  reduce_generic_kernel<<<grid_for(on), kThreads, 0, stream>>>(x, out, on, d, od, reduced, scale);
  check_launch("reduce_sum");
}

template <class TX, class TO>
void scale_convert(const TX* x, TO* out, int64_t n, float scale, cudaStream_t stream) {
  if (n == 0) return;
  scale_convert_kernel<<<grid_for(n), kThreads, 0, stream>>>(x, out, n, scale);
  check_launch("reduce_sum");
}

// The (x, out) storage pairs of reduce_sum.
#define MOKD_REDUCE_INSTANTIATE(TX, TO)                                                            \
  template void reduce_all(const TX*, int64_t, TO*, float, bool, double*, cudaStream_t);           \
  template void reduce_rows(const TX*, int64_t, int64_t, TO*, float, cudaStream_t);                \
  template void reduce_cols(const TX*, int64_t, int64_t, TO*, float, double*, cudaStream_t);       \
  template void reduce_generic(const TX*, TO*, int64_t, const StridedDesc&, const int64_t*, float, \
                               cudaStream_t);
MOKD_REDUCE_INSTANTIATE(float, float)
MOKD_REDUCE_INSTANTIATE(bf16, bf16)
MOKD_REDUCE_INSTANTIATE(bf16, float)
#undef MOKD_REDUCE_INSTANTIATE
template void scale_convert(const bf16*, float*, int64_t, float, cudaStream_t);

void argmax_lastdim(const float* x, int64_t rows, int64_t c, int64_t* out, cudaStream_t stream) {
  if (rows == 0) return;
  constexpr int kWarps = kThreads / 32;
  argmax_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      x, rows, c, out);
  check_launch("argmax");
}

void one_hot(const int64_t* labels, int64_t B, int64_t C, float on, float off, float* out,
             int64_t* bad, cudaStream_t stream) {
  if (B * C == 0) return;
  one_hot_kernel<<<grid_for(B * C), kThreads, 0, stream>>>(
      labels, B, C, on, off, out, reinterpret_cast<unsigned long long*>(bad));
  check_launch("one_hot");
}

}  // namespace mokd::kernels
