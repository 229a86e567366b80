// Layer norm over the last dim: forward (warp per row, two-pass mean/variance in double, as the
// CPU reference) and backward (gx warp per row; gw/gb as deterministic column sums). x, y, gy and
// gx are f32 or bf16 activations (widened on load, each output rounded once); weight, bias, their
// gradients, mean and rstd are f32. Memory traffic, in elements of the activation type (4 or 2
// bytes): forward reads x three times per row (the re-reads hit L1/L2 for rows of a few KB) and
// writes y plus 8 bytes per row; backward reads gy and x twice for gx and once more for gw/gb.
#include <cmath>

#include "engine/bf16.h"

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

constexpr int kWarps = kThreads / 32;

template <class T>
__global__ void ln_fwd_kernel(const T* x, const float* w, const float* b, float eps, T* y,
                              float* mean, float* rstd, int64_t rows, int64_t d) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* xr = x + row * d;
  T* yr = y + row * d;
  double s = 0;
  for (int64_t i = lane; i < d; i += 32) s += load_f32(xr[i]);
  double mu = warp_sum(s) / static_cast<double>(d);
  double v = 0;
  for (int64_t i = lane; i < d; i += 32) {
    double c = load_f32(xr[i]) - mu;
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
    float h = (load_f32(xr[i]) - m) * rs;
    if (w) h *= w[i];
    if (b) h += b[i];
    yr[i] = store_as<T>(h);
  }
}

template <class T>
__global__ void ln_bwd_dx_kernel(const T* gy, const T* x, const float* w, const float* mean,
                                 const float* rstd, T* gx, int64_t rows, int64_t d) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const T* gr = gy + row * d;
  const T* xr = x + row * d;
  T* o = gx + row * d;
  float m = mean[row], rs = rstd[row];
  double s1 = 0, s2 = 0;
  for (int64_t i = lane; i < d; i += 32) {
    const float g = load_f32(gr[i]);
    float gh = w ? g * w[i] : g;
    float xh = (load_f32(xr[i]) - m) * rs;
    s1 += gh;
    s2 += static_cast<double>(gh) * xh;
  }
  float a = static_cast<float>(warp_sum(s1) / static_cast<double>(d));
  float c = static_cast<float>(warp_sum(s2) / static_cast<double>(d));
  for (int64_t i = lane; i < d; i += 32) {
    const float g = load_f32(gr[i]);
    float gh = w ? g * w[i] : g;
    float xh = (load_f32(xr[i]) - m) * rs;
    o[i] = store_as<T>(rs * (gh - a - xh * c));
  }
}

__global__ void to_float_kernel(const double* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<float>(in[i]);
}

}  // namespace

template <class T>
void layer_norm(const T* x, const float* w, const float* b, float eps, T* y, float* mean,
                float* rstd, int64_t rows, int64_t d, cudaStream_t stream) {
  if (rows == 0) return;
  ln_fwd_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      x, w, b, eps, y, mean, rstd, rows, d);
  check_launch("layer_norm");
}

int64_t layer_norm_partials_size(int64_t rows, int64_t d) { return col_scratch_size(rows, d); }

template <class T>
void layer_norm_backward(const T* gy, const T* x, const float* w, const float* mean,
                         const float* rstd, T* gx, float* gw, float* gb, int64_t rows, int64_t d,
                         double* partials, cudaStream_t stream) {
  if (rows > 0) {
    ln_bwd_dx_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
        gy, x, w, mean, rstd, gx, rows, d);
    check_launch("layer_norm_backward");
  }
  double* sums = partials + static_cast<int64_t>(col_chunks(rows)) * d;
  if (gw) {
    col_reduce(
        rows, d,
        [=] __device__(int64_t r, int64_t c) -> double {
          return static_cast<double>(load_f32(gy[r * d + c])) *
                 ((load_f32(x[r * d + c]) - mean[r]) * rstd[r]);
        },
        partials, sums, stream, "layer_norm_backward");
    to_float_kernel<<<grid_for(d), kThreads, 0, stream>>>(sums, gw, d);
    check_launch("layer_norm_backward");
  }
  if (gb) {
    col_reduce(
        rows, d, [=] __device__(int64_t r, int64_t c) -> double { return load_f32(gy[r * d + c]); },
        partials, sums, stream, "layer_norm_backward");
    to_float_kernel<<<grid_for(d), kThreads, 0, stream>>>(sums, gb, d);
    check_launch("layer_norm_backward");
  }
}

template void layer_norm(const float*, const float*, const float*, float, float*, float*, float*,
                         int64_t, int64_t, cudaStream_t);
template void layer_norm(const bf16*, const float*, const float*, float, bf16*, float*, float*,
                         int64_t, int64_t, cudaStream_t);
template void layer_norm_backward(const float*, const float*, const float*, const float*,
                                  const float*, float*, float*, float*, int64_t, int64_t, double*,
                                  cudaStream_t);
template void layer_norm_backward(const bf16*, const bf16*, const float*, const float*,
                                  const float*, bf16*, float*, float*, int64_t, int64_t, double*,
                                  cudaStream_t);

}  // namespace mokd::kernels
