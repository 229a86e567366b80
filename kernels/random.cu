// Random fills from Philox4x32-10 (engine/rng.h, shared with the CPU): uniform, normal
// (Box-Muller on words 2i, 2i+1) and scaled Bernoulli masks. Element i is a pure function of
// (key, i), so the values equal the CPU backend's. Memory traffic: one write per element.
#include <cmath>

#include "engine/rng.h"
#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

#define MOKD_GRID_STRIDE(i, n)                                                           \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void uniform_kernel(float* p, int64_t n, float lo, float hi, RngKey key) {
  MOKD_GRID_STRIDE(i, n) p[i] = lo + (hi - lo) * philox_uniform(key, static_cast<uint64_t>(i));
}

__global__ void normal_kernel(float* p, int64_t n, float mean, float std, RngKey key) {
  MOKD_GRID_STRIDE(i, n) {
    float u1 = 1.0f - philox_uniform(key, 2 * static_cast<uint64_t>(i));
    float u2 = philox_uniform(key, 2 * static_cast<uint64_t>(i) + 1);
    // Accurate (not __fast) math: within an ulp or two of the CPU's std::log / std::cos.
    float r = sqrtf(-2.0f * logf(u1));
    p[i] = mean + std * r * cosf(6.283185307179586f * u2);
  }
}

__global__ void bernoulli_kernel(float* p, int64_t n, float keep, float inv, RngKey key) {
  MOKD_GRID_STRIDE(i, n) p[i] = philox_uniform(key, static_cast<uint64_t>(i)) < keep ? inv : 0.0f;
}

}  // namespace

void fill_uniform(float* dst, int64_t n, float lo, float hi, RngKey key, cudaStream_t stream) {
  if (n == 0) return;
  uniform_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, lo, hi, key);
  check_launch("fill_uniform");
}

void fill_normal(float* dst, int64_t n, float mean, float std, RngKey key, cudaStream_t stream) {
  if (n == 0) return;
  normal_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, mean, std, key);
  check_launch("fill_normal");
}

void bernoulli_scaled(float* dst, int64_t n, float keep_prob, RngKey key, cudaStream_t stream) {
  if (n == 0) return;
  float inv = keep_prob > 0 ? 1.0f / keep_prob : 0.0f;
  bernoulli_kernel<<<grid_for(n), kThreads, 0, stream>>>(dst, n, keep_prob, inv, key);
  check_launch("bernoulli_scaled");
}

}  // namespace mokd::kernels
