// Optimizer updates in place, f32: Adam/AdamW and SGD (momentum, dampening, nesterov, weight
// decay), element for element the formulas of engine/cpu/optim.cpp (scalars formed on the host in
// double, as PyTorch). Memory traffic: Adam reads p, g, m, v and writes p, m, v (28 bytes per
// parameter); SGD reads p, g (and the buffer) and writes p (and the buffer).
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

struct AdamScalars {
  float neg_step_size, bc2_sqrt, decay, wd, w1, beta2, w2, eps;
  bool has_wd, decoupled;
};

__device__ __forceinline__ float torch_lerp(float self, float end, float w) {
  return fabsf(w) < 0.5f ? self + w * (end - self) : end - (end - self) * (1.f - w);
}

__global__ void adam_kernel(float* p, const float* g, float* m, float* v, int64_t n, AdamScalars s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float pi = p[i], gi = g[i];
    if (s.has_wd) {
      if (s.decoupled) pi = pi * s.decay;
      else gi = gi + s.wd * pi;
    }
    float mi = torch_lerp(m[i], gi, s.w1);
    float vi = v[i] * s.beta2;
    vi = vi + s.w2 * gi * gi;
    float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + s.neg_step_size * mi / denom;
  }
}

struct SgdScalars {
  float wd, mom, keep, neg_lr;
  bool has_wd, use_momentum, first, nesterov;
};

__global__ void sgd_kernel(float* p, const float* g, float* buf, int64_t n, SgdScalars s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float gi = g[i];
    if (s.has_wd) gi = gi + s.wd * p[i];
    if (s.use_momentum) {
      float b = s.first ? gi : buf[i] * s.mom + s.keep * gi;
      buf[i] = b;
      gi = s.nesterov ? gi + s.mom * b : b;
    }
    p[i] = p[i] + s.neg_lr * gi;
  }
}

}  // namespace

void adam_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamHyper& h,
                 cudaStream_t stream) {
  if (n == 0) return;
  const double lr = h.lr, b1 = h.beta1, b2 = h.beta2, wd = h.weight_decay;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(h.step));
  AdamScalars s;
  s.neg_step_size = static_cast<float>(-(lr / bc1));
  s.bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  s.decay = static_cast<float>(1.0 - lr * wd);
  s.wd = h.weight_decay;
  s.w1 = static_cast<float>(1.0 - b1);
  s.beta2 = h.beta2;
  s.w2 = static_cast<float>(1.0 - b2);
  s.eps = h.eps;
  s.has_wd = h.weight_decay != 0.f;
  s.decoupled = h.decoupled;
  adam_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, g, m, v, n, s);
  check_launch("adam_update");
}

void sgd_update(float* p, const float* g, float* buf, int64_t n, const SgdHyper& h,
                cudaStream_t stream) {
  if (n == 0) return;
  SgdScalars s;
  s.wd = h.weight_decay;
  s.mom = h.momentum;
  s.keep = static_cast<float>(1.0 - static_cast<double>(h.dampening));
  s.neg_lr = -h.lr;
  s.has_wd = h.weight_decay != 0.f;
  s.use_momentum = h.momentum != 0.f;
  s.first = h.first_step;
  s.nesterov = h.nesterov;
  sgd_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, g, buf, n, s);
  check_launch("sgd_update");
}

}  // namespace mokd::kernels
