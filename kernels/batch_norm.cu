// Batch norm over x [rows, C] (NHWC flattened), per channel: training forward (batch statistics by
// two deterministic column reductions: mean, then squared deviations), evaluation forward, and
// backward (sum gy, sum gy * xhat). Same formulas as engine/cpu/batch_norm.cpp. x, y, gy and gx
// are f32 or bf16 activations (widened on load, each output rounded once); every per-channel
// tensor is f32. Memory traffic, in elements of the activation type (4 or 2 bytes): training
// forward reads x three times and writes y once; eval reads x once; backward reads gy and x twice
// (sums, then gx) and writes gx once.
#include <cmath>

#include "engine/bf16.h"

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

#define MOKD_GRID_STRIDE(i, n)                                                           \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void bn_mean_kernel(double* sums, int64_t rows, int64_t C) {
  MOKD_GRID_STRIDE(c, C) sums[c] /= static_cast<double>(rows);
}

// Per channel: save stats, update running stats, form scale/shift (written over mean/m2 slots).
__global__ void bn_train_finish(const double* mean, const double* m2, const float* w,
                                const float* b, float* rm, float* rv, float momentum, float eps,
                                float* sm, float* si, float* scale, float* shift, int64_t rows,
                                int64_t C) {
  MOKD_GRID_STRIDE(c, C) {
    double var = m2[c] / double(rows);
    double invstd = 1.0 / sqrt(var + double(eps));
    sm[c] = static_cast<float>(mean[c]);
    si[c] = static_cast<float>(invstd);
    double unbiased = m2[c] / double(rows - 1);
    rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mean[c]);
    rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * unbiased);
    scale[c] = static_cast<float>(w[c] * invstd);
    shift[c] = static_cast<float>(b[c] - mean[c] * w[c] * invstd);
  }
}

__global__ void bn_eval_finish(const float* w, const float* b, const float* rm, const float* rv,
                               float eps, float* scale, float* shift, int64_t C) {
  MOKD_GRID_STRIDE(c, C) {
    double invstd = 1.0 / sqrt(double(rv[c]) + double(eps));
    scale[c] = static_cast<float>(w[c] * invstd);
    shift[c] = static_cast<float>(b[c] - rm[c] * w[c] * invstd);
  }
}

template <class T>
__global__ void bn_apply(const T* x, const float* scale, const float* shift, T* y, int64_t n,
                         int64_t C) {
  MOKD_GRID_STRIDE(i, n) {
    int64_t c = i % C;
    y[i] = store_as<T>(load_f32(x[i]) * scale[c] + shift[c]);
  }
}

__global__ void bn_bwd_finish(const double* sg, const double* sgx, const float* w,
                              const float* invstd, bool training, float* gw, float* gb, float* k,
                              float* mg, float* mgx, int64_t rows, int64_t C) {
  MOKD_GRID_STRIDE(c, C) {
    gw[c] = static_cast<float>(sgx[c]);
    gb[c] = static_cast<float>(sg[c]);
    k[c] = w[c] * invstd[c];
    mg[c] = training ? static_cast<float>(sg[c] / double(rows)) : 0.f;
    mgx[c] = training ? static_cast<float>(sgx[c] / double(rows)) : 0.f;
  }
}

template <class T>
__global__ void bn_bwd_apply(const T* gy, const T* x, const float* mean, const float* invstd,
                             const float* k, const float* mg, const float* mgx, T* gx, int64_t n,
                             int64_t C) {
  MOKD_GRID_STRIDE(i, n) {
    int64_t c = i % C;
    float xhat = (load_f32(x[i]) - mean[c]) * invstd[c];
    gx[i] = store_as<T>(k[c] * (load_f32(gy[i]) - mg[c] - xhat * mgx[c]));
  }
}

}  // namespace

// Layout of the scratch (doubles): column partials, then two C-vectors of sums, then 3 C-vectors
// of floats (stored in 2 doubles each to keep alignment simple).
int64_t batch_norm_scratch_size(int64_t rows, int64_t C) {
  return col_scratch_size(rows, C) + 2 * C + 3 * C;
}

template <class T>
void batch_norm_train(const T* x, const float* w, const float* b, float* running_mean,
                      float* running_var, float momentum, float eps, T* y, float* save_mean,
                      float* save_invstd, int64_t rows, int64_t C, double* scratch,
                      cudaStream_t stream) {
  if (C == 0) return;
  double* partials = scratch;
  double* mean = scratch + col_scratch_size(rows, C);
  double* m2 = mean + C;
  float* scale = reinterpret_cast<float*>(m2 + C);
  float* shift = scale + C;
  col_reduce(
      rows, C, [=] __device__(int64_t r, int64_t c) -> double { return load_f32(x[r * C + c]); },
      partials, mean, stream, "batch_norm_train");
  bn_mean_kernel<<<grid_for(C), kThreads, 0, stream>>>(mean, rows, C);
  check_launch("batch_norm_train");
  const double* cmean = mean;
  col_reduce(
      rows, C,
      [=] __device__(int64_t r, int64_t c) -> double {
        double dv = load_f32(x[r * C + c]) - cmean[c];
        return dv * dv;
      },
      partials, m2, stream, "batch_norm_train");
  bn_train_finish<<<grid_for(C), kThreads, 0, stream>>>(mean, m2, w, b, running_mean, running_var,
                                                        momentum, eps, save_mean, save_invstd,
                                                        scale, shift, rows, C);
  check_launch("batch_norm_train");
  bn_apply<<<grid_for(rows * C), kThreads, 0, stream>>>(x, scale, shift, y, rows * C, C);
  check_launch("batch_norm_train");
}

template <class T>
void batch_norm_eval(const T* x, const float* w, const float* b, const float* running_mean,
                     const float* running_var, float eps, T* y, int64_t rows, int64_t C,
                     double* scratch, cudaStream_t stream) {
  if (C == 0) return;
  float* scale = reinterpret_cast<float*>(scratch);
  float* shift = scale + C;
  bn_eval_finish<<<grid_for(C), kThreads, 0, stream>>>(w, b, running_mean, running_var, eps, scale,
                                                       shift, C);
  check_launch("batch_norm_eval");
  if (rows * C == 0) return;
  bn_apply<<<grid_for(rows * C), kThreads, 0, stream>>>(x, scale, shift, y, rows * C, C);
  check_launch("batch_norm_eval");
}

template <class T>
void batch_norm_backward(const T* gy, const T* x, const float* w, const float* mean,
                         const float* invstd, bool training, T* gx, float* gw, float* gb,
                         int64_t rows, int64_t C, double* scratch, cudaStream_t stream) {
  if (C == 0) return;
  double* partials = scratch;
  double* sg = scratch + col_scratch_size(rows, C);
  double* sgx = sg + C;
  float* k = reinterpret_cast<float*>(sgx + C);
  float* mg = k + C;
  float* mgx = mg + C;
  col_reduce(
      rows, C, [=] __device__(int64_t r, int64_t c) -> double { return load_f32(gy[r * C + c]); },
      partials, sg, stream, "batch_norm_backward");
  col_reduce(
      rows, C,
      [=] __device__(int64_t r, int64_t c) -> double {
        return double(load_f32(gy[r * C + c])) * (double(load_f32(x[r * C + c])) - mean[c]) *
               invstd[c];
      },
      partials, sgx, stream, "batch_norm_backward");
  bn_bwd_finish<<<grid_for(C), kThreads, 0, stream>>>(sg, sgx, w, invstd, training, gw, gb, k, mg,
                                                      mgx, rows, C);
  check_launch("batch_norm_backward");
  if (rows * C == 0) return;
  bn_bwd_apply<<<grid_for(rows * C), kThreads, 0, stream>>>(gy, x, mean, invstd, k, mg, mgx, gx,
                                                            rows * C, C);
  check_launch("batch_norm_backward");
}

#define MOKD_BN_INSTANTIATE(T)                                                                    \
  template void batch_norm_train(const T*, const float*, const float*, float*, float*, float,     \
                                 float, T*, float*, float*, int64_t, int64_t, double*,            \
                                 cudaStream_t);                                                   \
  template void batch_norm_eval(const T*, const float*, const float*, const float*, const float*, \
                                float, T*, int64_t, int64_t, double*, cudaStream_t);              \
  template void batch_norm_backward(const T*, const T*, const float*, const float*, const float*, \
                                    bool, T*, float*, float*, int64_t, int64_t, double*,          \
                                    cudaStream_t);
MOKD_BN_INSTANTIATE(float)
MOKD_BN_INSTANTIATE(bf16)
#undef MOKD_BN_INSTANTIATE

}  // namespace mokd::kernels
