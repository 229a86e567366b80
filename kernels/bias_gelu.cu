// bias_gelu (engine/backend.h): y = gelu(x + bias) in one pass, and its backward in one pass that
// writes gx and accumulates the bias's column sums (the column reduction of common.cuh, whose
// per-element function stores gx as it reads it: each element is visited once). The formulas are
// elementwise.cu's erf GELU; x + bias is rounded to T before the GELU, as the composition stores
// it. x, y, g, gx are T (float or bf16), bias and gbias float. Memory traffic in elements of T:
// forward reads n and writes n (plus the bias, from cache); backward reads 2n and writes n, plus
// 8 bytes per column and row chunk of partial sums.
#include "engine/bf16.h"
#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

template <class T>
__device__ __forceinline__ float gelu_input(T x, float b) {
  return load_f32(store_as<T>(load_f32(x) + b));
}

template <class T>
__device__ __forceinline__ T gelu_grad(T g, T x, float b) {
  const float h = gelu_input(x, b);
  const float cdf = 0.5f * (1.f + erff(h * kInvSqrt2));
  return store_as<T>(load_f32(g) * (cdf + h * kInvSqrt2Pi * expf(-0.5f * h * h)));
}

template <class T>
__global__ void bias_gelu_kernel(const T* x, const float* bias, T* y, int64_t n, int64_t c) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float h = gelu_input(x[i], bias[i % c]);
    y[i] = store_as<T>(0.5f * h * (1.f + erff(h * kInvSqrt2)));
  }
}

template <class T>
__global__ void bias_gelu_bwd_kernel(const T* g, const T* x, const float* bias, T* gx, int64_t n,
                                     int64_t c) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    gx[i] = gelu_grad(g[i], x[i], bias[i % c]);
}

__global__ void sums_to_float_kernel(const double* in, float* out, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<float>(in[i]);
}

}  // namespace

template <class T>
void bias_gelu(const T* x, const float* bias, T* y, int64_t rows, int64_t c, cudaStream_t stream) {
  const int64_t n = rows * c;
  if (n == 0) return;
  bias_gelu_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(x, bias, y, n, c);
  check_launch("bias_gelu");
}

int64_t bias_gelu_partials_size(int64_t rows, int64_t c) { return col_scratch_size(rows, c); }

template <class T>
void bias_gelu_backward(const T* g, const T* x, const float* bias, T* gx, float* gbias,
                        int64_t rows, int64_t c, double* partials, cudaStream_t stream) {
  if (c == 0) return;
  if (!gbias) {
    if (rows == 0) return;
    bias_gelu_bwd_kernel<T>
        <<<grid_for(rows * c), kThreads, 0, stream>>>(g, x, bias, gx, rows * c, c);
    check_launch("bias_gelu_backward");
    return;
  }
  double* sums = partials + static_cast<int64_t>(col_chunks(rows)) * c;
  col_reduce(
      rows, c,
      [=] __device__(int64_t r, int64_t j) -> double {
        const int64_t i = r * c + j;
        const T v = gelu_grad(g[i], x[i], bias[j]);
        gx[i] = v;
        return load_f32(v);
      },
      partials, sums, stream, "bias_gelu_backward");
  sums_to_float_kernel<<<grid_for(c), kThreads, 0, stream>>>(sums, gbias, c);
  check_launch("bias_gelu_backward");
}

template void bias_gelu(const float*, const float*, float*, int64_t, int64_t, cudaStream_t);
template void bias_gelu(const bf16*, const float*, bf16*, int64_t, int64_t, cudaStream_t);
template void bias_gelu_backward(const float*, const float*, const float*, float*, float*, int64_t,
                                 int64_t, double*, cudaStream_t);
template void bias_gelu_backward(const bf16*, const bf16*, const float*, bf16*, float*, int64_t,
                                 int64_t, double*, cudaStream_t);

}  // namespace mokd::kernels
