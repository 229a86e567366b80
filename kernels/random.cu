// Random fills from Philox4x32-10 (engine/rng.h, shared with the CPU): uniform, normal
// (Box-Muller on words 2i, 2i+1) and scaled Bernoulli masks. Element i is a pure function of
// (key, i), so the values equal the CPU backend's. A bf16 destination gets the f32 value rounded
// once. Memory traffic: one write per element (4 bytes for f32, 2 for bf16).
#include <cmath>

#include "engine/bf16.h"
#include "engine/rng.h"
#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

#define MOKD_GRID_STRIDE(i, n)                                                           \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

template <class T>
__global__ void uniform_kernel(T* p, int64_t n, float lo, float hi, RngKey key) {
  MOKD_GRID_STRIDE(i, n) {
    p[i] = store_as<T>(lo + (hi - lo) * philox_uniform(key, static_cast<uint64_t>(i)));
  }
}

template <class T>
__global__ void normal_kernel(T* p, int64_t n, float mean, float std, RngKey key) {
  MOKD_GRID_STRIDE(i, n) {
    float u1 = 1.0f - philox_uniform(key, 2 * static_cast<uint64_t>(i));
    float u2 = philox_uniform(key, 2 * static_cast<uint64_t>(i) + 1);
    // Accurate (not __fast) math: within an ulp or two of the CPU's std::log / std::cos.
    float r = sqrtf(-2.0f * logf(u1));
    p[i] = store_as<T>(mean + std * r * cosf(6.283185307179586f * u2));
  }
}

template <class T>
__global__ void bernoulli_kernel(T* p, int64_t n, float keep, float inv, RngKey key) {
  MOKD_GRID_STRIDE(i, n) {
    p[i] = store_as<T>(philox_uniform(key, static_cast<uint64_t>(i)) < keep ? inv : 0.0f);
  }
}

}  // namespace

template <class T>
void fill_uniform(T* dst, int64_t n, float lo, float hi, RngKey key, cudaStream_t stream) {
  if (n == 0) return;
  uniform_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, lo, hi, key);
  check_launch("fill_uniform");
}

template <class T>
void fill_normal(T* dst, int64_t n, float mean, float std, RngKey key, cudaStream_t stream) {
  if (n == 0) return;
  normal_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, mean, std, key);
  check_launch("fill_normal");
}

template <class T>
void bernoulli_scaled(T* dst, int64_t n, float keep_prob, RngKey key, cudaStream_t stream) {
  if (n == 0) return;
  float inv = keep_prob > 0 ? 1.0f / keep_prob : 0.0f;
  bernoulli_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, keep_prob, inv, key);
  check_launch("bernoulli_scaled");
}

#define MOKD_RANDOM_INSTANTIATE(T)                                             \
  template void fill_uniform(T*, int64_t, float, float, RngKey, cudaStream_t); \
  template void fill_normal(T*, int64_t, float, float, RngKey, cudaStream_t);  \
  template void bernoulli_scaled(T*, int64_t, float, RngKey, cudaStream_t);
MOKD_RANDOM_INSTANTIATE(float)
MOKD_RANDOM_INSTANTIATE(bf16)
#undef MOKD_RANDOM_INSTANTIATE

}  // namespace mokd::kernels
