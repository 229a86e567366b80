// Layer norm over the last dim: forward (warp per row, two-pass mean/variance in double, as the
// CPU reference) and backward (gx warp per row; gw/gb as deterministic column sums). Memory
// traffic: forward reads x three times per row (the re-reads hit L1/L2 for rows of a few KB) and
// writes y plus 8 bytes per row; backward reads gy and x twice for gx and once more for gw/gb.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

constexpr int kWarps = kThreads / 32;

__global__ void ln_fwd_kernel(const float* x, const float* w, const float* b, float eps, float* y,
                              float* mean, float* rstd, int64_t rows, int64_t d) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = x + row * d;
  float* yr = y + row * d;
  double s = 0;
  for (int64_t i = lane; i < d; i += 32) s += xr[i];
  double mu = warp_sum(s) / static_cast<double>(d);
  double v = 0;
  for (int64_t i = lane; i < d; i += 32) {
    double c = xr[i] - mu;
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
    float h = (xr[i] - m) * rs;
    if (w) h *= w[i];
    if (b) h += b[i];
    yr[i] = h;
  }
}

__global__ void ln_bwd_dx_kernel(const float* gy, const float* x, const float* w, const float* mean,
                                 const float* rstd, float* gx, int64_t rows, int64_t d) {
  int64_t row = blockIdx.x * static_cast<int64_t>(kWarps) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* gr = gy + row * d;
  const float* xr = x + row * d;
  float* o = gx + row * d;
  float m = mean[row], rs = rstd[row];
  double s1 = 0, s2 = 0;
  for (int64_t i = lane; i < d; i += 32) {
    float gh = w ? gr[i] * w[i] : gr[i];
    float xh = (xr[i] - m) * rs;
    s1 += gh;
    s2 += static_cast<double>(gh) * xh;
  }
  float a = static_cast<float>(warp_sum(s1) / static_cast<double>(d));
  float c = static_cast<float>(warp_sum(s2) / static_cast<double>(d));
  for (int64_t i = lane; i < d; i += 32) {
    float gh = w ? gr[i] * w[i] : gr[i];
    float xh = (xr[i] - m) * rs;
    o[i] = rs * (gh - a - xh * c);
  }
}

__global__ void to_float_kernel(const double* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<float>(in[i]);
}

}  // namespace

void layer_norm(const float* x, const float* w, const float* b, float eps, float* y, float* mean,
                float* rstd, int64_t rows, int64_t d, cudaStream_t stream) {
  if (rows == 0) return;
  ln_fwd_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(
      x, w, b, eps, y, mean, rstd, rows, d);
  check_launch("layer_norm");
}

int64_t layer_norm_partials_size(int64_t rows, int64_t d) { return col_scratch_size(rows, d); }

void layer_norm_backward(const float* gy, const float* x, const float* w, const float* mean,
                         const float* rstd, float* gx, float* gw, float* gb, int64_t rows,
                         int64_t d, double* partials, cudaStream_t stream) {
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
          return static_cast<double>(gy[r * d + c]) * ((x[r * d + c] - mean[r]) * rstd[r]);
        },
        partials, sums, stream, "layer_norm_backward");
    to_float_kernel<<<grid_for(d), kThreads, 0, stream>>>(sums, gw, d);
    check_launch("layer_norm_backward");
  }
  if (gb) {
    col_reduce(
        rows, d, [=] __device__(int64_t r, int64_t c) -> double { return gy[r * d + c]; }, partials,
        sums, stream, "layer_norm_backward");
    to_float_kernel<<<grid_for(d), kThreads, 0, stream>>>(sums, gb, d);
    check_launch("layer_norm_backward");
  }
}

}  // namespace mokd::kernels
