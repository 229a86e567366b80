// add_layer_norm (engine/backend.h): s = x + residual and n = layer_norm(s) in one pass over each
// row (a warp per row: the sum written, then layer_norm.cu's two-pass statistics in double over
// the stored s, each lane re-reading only what it wrote), and the backward gx = gs +
// layer_norm_backward(gn) as layer_norm.cu's gx pass with gs added to the rounded result; gw and
// gb are layer_norm.cu's deterministic column sums. Activations T (float or bf16), the rest float.
// Memory traffic in elements of T: forward reads x and residual once and writes s and n (the
// re-reads of s hit L1/L2), plus 8 bytes per row; backward reads gn and s twice (from cache the
// second time), gs once and writes gx, and reads gn and s once more for gw/gb.
#include <cmath>

#include "engine/bf16.h"
#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

constexpr int kWarps = kThreads / 32;

template <class T>
__global__ void add_ln_fwd_kernel(const T* x, const T* res, const float* w, const float* b,
                                  float eps, T* s, T* n, float* mean, float* rstd, int64_t rows,
                                  int64_t d) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * d;
  const T* rr = res + row * d;
  T* sr = s + row * d;
  T* nr = n + row * d;
  double sum = 0;
  for (int64_t i = lane; i < d; i += 32) {
    const T v = store_as<T>(load_f32(xr[i]) + load_f32(rr[i]));
    sr[i] = v;
    sum += load_f32(v);
  }
  double mu = warp_sum(sum) / static_cast<double>(d);
  double v = 0;
  for (int64_t i = lane; i < d; i += 32) {
    double c = load_f32(sr[i]) - mu;
    v += c * c;
  }
  v = warp_sum(v) / static_cast<double>(d);
  float m = static_cast<float>(mu);
  float rs = static_cast<float>(1.0 / sqrt(v + static_cast<double>(eps)));
  if (lane == 0) {
    mean[row] = m;
    rstd[row] = rs;
  }
  for (int64_t i = lane; i < d; i += 32) {
    float h = (load_f32(sr[i]) - m) * rs;
    if (w) h *= w[i];
    if (b) h += b[i];
    nr[i] = store_as<T>(h);
  }
}

template <class T>
__global__ void add_ln_bwd_dx_kernel(const T* gn, const T* gs, const T* s, const float* w,
                                     const float* mean, const float* rstd, T* gx, int64_t rows,
                                     int64_t d) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* gr = gn + row * d;
  const T* sr = s + row * d;
  T* o = gx + row * d;
  float m = mean[row], rs = rstd[row];
  double s1 = 0, s2 = 0;
  for (int64_t i = lane; i < d; i += 32) {
    const float g = load_f32(gr[i]);
    float gh = w ? g * w[i] : g;
    float xh = (load_f32(sr[i]) - m) * rs;
    s1 += gh;
    s2 += static_cast<double>(gh) * xh;
  }
  float a = static_cast<float>(warp_sum(s1) / static_cast<double>(d));
  float c = static_cast<float>(warp_sum(s2) / static_cast<double>(d));
  for (int64_t i = lane; i < d; i += 32) {
    const float g = load_f32(gr[i]);
    float gh = w ? g * w[i] : g;
    float xh = (load_f32(sr[i]) - m) * rs;
    // Rounded as layer_norm_backward stores it, then gs added as the tape's accumulation does.
    const T lg = store_as<T>(__fmul_rn(rs, gh - a - xh * c));
    o[i] = gs ? store_as<T>(__fadd_rn(load_f32(lg), load_f32(gs[row * d + i]))) : lg;
  }
}

__global__ void sums_to_float_kernel(const double* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<float>(in[i]);
}

}  // namespace

template <class T>
void add_layer_norm(const T* x, const T* residual, const float* w, const float* b, float eps, T* s,
                    T* n, float* mean, float* rstd, int64_t rows, int64_t d, cudaStream_t stream) {
  if (rows == 0) return;
  add_ln_fwd_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      x, residual, w, b, eps, s, n, mean, rstd, rows, d);
  check_launch("add_layer_norm");
}

int64_t add_layer_norm_partials_size(int64_t rows, int64_t d) { return col_scratch_size(rows, d); }

template <class T>
void add_layer_norm_backward(const T* gn, const T* gs, const T* s, const float* w,
                             const float* mean, const float* rstd, T* gx, float* gw, float* gb,
                             int64_t rows, int64_t d, double* partials, cudaStream_t stream) {
  if (rows > 0) {
    add_ln_bwd_dx_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0,
                           stream>>>(gn, gs, s, w, mean, rstd, gx, rows, d);
    check_launch("add_layer_norm_backward");
  }
  double* sums = partials + static_cast<int64_t>(col_chunks(rows)) * d;
  if (gw) {
    col_reduce(
        rows, d,
        [=] __device__(int64_t r, int64_t c) -> double {
          return static_cast<double>(load_f32(gn[r * d + c])) *
                 ((load_f32(s[r * d + c]) - mean[r]) * rstd[r]);
        },
        partials, sums, stream, "add_layer_norm_backward");
    sums_to_float_kernel<<<grid_for(d), kThreads, 0, stream>>>(sums, gw, d);
    check_launch("add_layer_norm_backward");
  }
  if (gb) {
    col_reduce(
        rows, d, [=] __device__(int64_t r, int64_t c) -> double { return load_f32(gn[r * d + c]); },
        partials, sums, stream, "add_layer_norm_backward");
    sums_to_float_kernel<<<grid_for(d), kThreads, 0, stream>>>(sums, gb, d);
    check_launch("add_layer_norm_backward");
  }
}

template void add_layer_norm(const float*, const float*, const float*, const float*, float, float*,
                             float*, float*, float*, int64_t, int64_t, cudaStream_t);
template void add_layer_norm(const bf16*, const bf16*, const float*, const float*, float, bf16*,
                             bf16*, float*, float*, int64_t, int64_t, cudaStream_t);
template void add_layer_norm_backward(const float*, const float*, const float*, const float*,
                                      const float*, const float*, float*, float*, float*, int64_t,
                                      int64_t, double*, cudaStream_t);
template void add_layer_norm_backward(const bf16*, const bf16*, const bf16*, const float*,
                                      const float*, const float*, bf16*, float*, float*, int64_t,
                                      int64_t, double*, cudaStream_t);

}  // namespace mokd::kernels
