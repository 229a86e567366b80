// Fused losses over the rows of [B, C] f32 logits: cross-entropy against hard labels (with label
// smoothing) or soft targets, and the distillation KL at a temperature, forward and backward.
// A row is handled by one warp (C <= kWarpRowMaxC) or one 256-thread block; each thread keeps an
// online log-sum-exp (running max in f32, sum of exp in double, rescaled when the max grows), and
// the threads of a row merge theirs with shuffles (and shared memory across warps).
// Memory traffic per element: cross-entropy forward reads x (and the soft target) once and writes
// two floats per row (loss, lse); backward reads x once (soft targets: twice when the logits'
// gradient needs sum(q), the second read mostly from L1/L2) and writes each gradient once. KL
// forward reads student and teacher once and writes three floats per row; backward reads both
// once and writes the student gradient once.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/loss.cuh"

namespace mokd::kernels {

namespace {

constexpr int kWarps = kThreads / 32;
constexpr int64_t kWarpRowMaxC = 256;  // up to 8 elements per lane: one warp per row

// Online log-sum-exp of values v with a weighted sum: after adding (v_i, w_i),
//   s = sum_i exp(v_i - m), a = sum_i exp(v_i - m) w_i, m = max_i v_i.
// m = -inf means "no value yet" (s = a = 0); -inf values add nothing.
struct Online {
  float m;
  double s, a;
};

__device__ __forceinline__ Online online_empty() { return {-INFINITY, 0.0, 0.0}; }

__device__ __forceinline__ void online_add(Online& o, float v, double w) {
  if (v > o.m) {
    double f = expf(o.m - v);  // 0 when o.m = -inf
    o.s = o.s * f + 1.0;
    o.a = o.a * f + w;
    o.m = v;
  } else if (v != -INFINITY) {  // NaN goes here and poisons s, as on the CPU
    double e = expf(v - o.m);
    o.s += e;
    o.a += e * w;
  }
}

// Commutative (bitwise) merge, so every lane of a butterfly ends with the same state.
__device__ __forceinline__ Online online_merge(Online x, Online y) {
  if (y.m > x.m) {
    Online t = x;
    x = y;
    y = t;
  }
  if (y.m == -INFINITY) return x;
  double f = expf(y.m - x.m);
  x.s += y.s * f;
  x.a += y.a * f;
  return x;
}

__device__ __forceinline__ Online warp_online(Online o) {
  for (int off = 16; off > 0; off >>= 1) {
    Online p{__shfl_xor_sync(0xffffffffu, o.m, off), __shfl_xor_sync(0xffffffffu, o.s, off),
             __shfl_xor_sync(0xffffffffu, o.a, off)};
    o = online_merge(o, p);
  }
  return o;
}

// Reductions over the TPR threads of a row (TPR = 32: a warp; kThreads: the block); every
// thread of the row gets the result. sm: kWarps slots of block shared memory, reusable after.
template <int TPR>
__device__ __forceinline__ Online row_online(Online o, Online* sm) {
  o = warp_online(o);
  if constexpr (TPR == 32) {
    return o;
  } else {
    __syncthreads();  // sm may still be read by a previous reduction
    if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = o;
    __syncthreads();
    Online r = sm[0];
    for (int i = 1; i < kWarps; ++i) r = online_merge(r, sm[i]);
    return r;
  }
}

template <int TPR>
__device__ __forceinline__ double row_sum(double v, double* sm) {
  v = warp_sum(v);
  if constexpr (TPR == 32) {
    return v;
  } else {
    __syncthreads();
    if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = v;
    __syncthreads();
    double r = 0;
    for (int i = 0; i < kWarps; ++i) r += sm[i];
    return r;
  }
}

// The row of this thread and its index within the row; rows >= B are whole warps (TPR = 32) or
// never happen (TPR = kThreads: one block per row), so early returns keep the reductions legal.
template <int TPR>
__device__ __forceinline__ int64_t row_of_thread(int& lane) {
  lane = threadIdx.x % TPR;
  return static_cast<int64_t>(blockIdx.x) * (kThreads / TPR) + threadIdx.x / TPR;
}

template <int TPR>
__global__ void ce_fwd_kernel(const float* x, const int64_t* labels, const float* soft, float keep,
                              float off, int64_t B, int64_t C, float* loss, float* lse,
                              unsigned long long* bad) {
  __shared__ Online sm_o[kWarps];
  __shared__ double sm_d[kWarps];
  int lane;
  const int64_t row = row_of_thread<TPR>(lane);
  if (row >= B) return;
  const float* xr = x + row * C;
  Online o = online_empty();
  double q1 = 0, q2 = 0;  // soft: sum q, sum q x; labels: -, sum x
  if (soft) {
    const float* tr = soft + row * C;
    for (int64_t i = lane; i < C; i += TPR) {
      float v = xr[i], q = keep * tr[i] + off;
      online_add(o, v, 0.0);
      q1 += q;
      q2 += static_cast<double>(q) * v;
    }
    q1 = row_sum<TPR>(q1, sm_d);
  } else {
    for (int64_t i = lane; i < C; i += TPR) {
      float v = xr[i];
      online_add(o, v, 0.0);
      q2 += v;
    }
  }
  o = row_online<TPR>(o, sm_o);
  q2 = row_sum<TPR>(q2, sm_d);
  if (lane != 0) return;
  double l = o.m + ::log(o.s);
  double qsum = q1, qx = q2;
  if (!soft) {
    int64_t lab = labels[row];
    if (lab < 0 || lab >= C) {
      atomicMin(bad, static_cast<unsigned long long>(row));
      loss[row] = NAN;
      lse[row] = static_cast<float>(l);
      return;
    }
    qsum = static_cast<double>(keep) + static_cast<double>(off) * C;
    qx = static_cast<double>(keep) * xr[lab] + static_cast<double>(off) * q2;
  }
  loss[row] = static_cast<float>(l * qsum - qx);
  lse[row] = static_cast<float>(l);
}

template <int TPR>
__global__ void ce_bwd_kernel(const float* x, const int64_t* labels, const float* soft, float keep,
                              float off, const float* lse, const float* gloss, int64_t gstride,
                              float grad_scale, int64_t B, int64_t C, float* gx, float* gt) {
  __shared__ double sm_d[kWarps];
  int lane;
  const int64_t row = row_of_thread<TPR>(lane);
  if (row >= B) return;
  const float* xr = x + row * C;
  const float* tr = soft ? soft + row * C : nullptr;
  const float g = grad_scale * gloss[row * gstride], l = lse[row];
  float qs = 0;
  if (gx) {  // d/dx_c = sum(q) softmax_c - q_c
    double q1 = static_cast<double>(keep) + static_cast<double>(off) * C;
    if (tr) {
      q1 = 0;
      for (int64_t i = lane; i < C; i += TPR) q1 += keep * tr[i] + off;
      q1 = row_sum<TPR>(q1, sm_d);
    }
    qs = static_cast<float>(q1);
  }
  const int64_t lab = labels ? labels[row] : -1;
  float* gxr = gx ? gx + row * C : nullptr;
  float* gtr = gt ? gt + row * C : nullptr;
  for (int64_t i = lane; i < C; i += TPR) {
    float v = xr[i];
    if (gxr) {
      float q = tr ? keep * tr[i] + off : (i == lab ? keep + off : off);
      gxr[i] = g * (qs * expf(v - l) - q);
    }
    if (gtr) gtr[i] = g * keep * (l - v);  // d/dt_c = -keep log_softmax_c
  }
}

template <int TPR>
__global__ void kl_fwd_kernel(const float* s, const float* t, float inv_t, int64_t B, int64_t C,
                              float* loss, float* lse_s, float* lse_t) {
  __shared__ Online sm_o[kWarps];
  int lane;
  const int64_t row = row_of_thread<TPR>(lane);
  if (row >= B) return;
  const float* sr = s + row * C;
  const float* tr = t + row * C;
  // Teacher state weighted by log p_t - log p_s up to the row constants: (t - s) / T.
  Online ot = online_empty(), os = online_empty();
  for (int64_t i = lane; i < C; i += TPR) {
    float a = sr[i] * inv_t, b = tr[i] * inv_t;
    online_add(ot, b, static_cast<double>(b) - a);
    online_add(os, a, 0.0);
  }
  ot = row_online<TPR>(ot, sm_o);
  os = row_online<TPR>(os, sm_o);
  if (lane != 0) return;
  double lt = ot.m + ::log(ot.s), ls = os.m + ::log(os.s);
  // sum_c p_t ((t_c - s_c) / T - lt + ls), sum_c p_t = 1
  loss[row] = static_cast<float>(ot.a / ot.s - (lt - ls));
  lse_s[row] = static_cast<float>(ls);
  lse_t[row] = static_cast<float>(lt);
}

template <int TPR>
__global__ void kl_bwd_kernel(const float* s, const float* t, float inv_t, const float* lse_s,
                              const float* lse_t, const float* gloss, int64_t gstride,
                              float grad_scale, int64_t B, int64_t C, float* gs) {
  int lane;
  const int64_t row = row_of_thread<TPR>(lane);
  if (row >= B) return;
  const float* sr = s + row * C;
  const float* tr = t + row * C;
  float* gr = gs + row * C;
  const float g = grad_scale * gloss[row * gstride] * inv_t, ls = lse_s[row], lt = lse_t[row];
  for (int64_t i = lane; i < C; i += TPR)
    gr[i] = g * (expf(sr[i] * inv_t - ls) - expf(tr[i] * inv_t - lt));
}

bool warp_rows(int64_t C) { return C <= kWarpRowMaxC; }

template <int TPR>
unsigned blocks_for(int64_t B) {
  constexpr int64_t per = kThreads / TPR;
  return static_cast<unsigned>((B + per - 1) / per);
}

}  // namespace

void cross_entropy(const float* x, const int64_t* labels, const float* soft, float smoothing,
                   int64_t B, int64_t C, float* loss, float* lse, int64_t* bad,
                   cudaStream_t stream) {
  if (B == 0 || C == 0) return;
  const float off = smoothing / static_cast<float>(C), keep = 1.f - smoothing;
  auto* flag = reinterpret_cast<unsigned long long*>(bad);
  if (warp_rows(C))
    ce_fwd_kernel<32><<<blocks_for<32>(B), kThreads, 0, stream>>>(x, labels, soft, keep, off, B, C,
                                                                  loss, lse, flag);
  else
    ce_fwd_kernel<kThreads><<<blocks_for<kThreads>(B), kThreads, 0, stream>>>(
        x, labels, soft, keep, off, B, C, loss, lse, flag);
  check_launch("cross_entropy");
}

void cross_entropy_backward(const float* x, const int64_t* labels, const float* soft,
                            float smoothing, const float* lse, const float* gloss,
                            bool gloss_broadcast, float grad_scale, int64_t B, int64_t C,
                            float* glogits, float* gsoft, cudaStream_t stream) {
  if (B == 0 || C == 0 || (!glogits && !gsoft)) return;
  const float off = smoothing / static_cast<float>(C), keep = 1.f - smoothing;
  const int64_t gstride = gloss_broadcast ? 0 : 1;
  if (warp_rows(C))
    ce_bwd_kernel<32><<<blocks_for<32>(B), kThreads, 0, stream>>>(
        x, labels, soft, keep, off, lse, gloss, gstride, grad_scale, B, C, glogits, gsoft);
  else
    ce_bwd_kernel<kThreads><<<blocks_for<kThreads>(B), kThreads, 0, stream>>>(
        x, labels, soft, keep, off, lse, gloss, gstride, grad_scale, B, C, glogits, gsoft);
  check_launch("cross_entropy_backward");
}

void kl_div(const float* student, const float* teacher, float temperature, int64_t B, int64_t C,
            float* loss, float* lse_s, float* lse_t, cudaStream_t stream) {
  if (B == 0 || C == 0) return;
  const float inv_t = 1.f / temperature;
  if (warp_rows(C))
    kl_fwd_kernel<32><<<blocks_for<32>(B), kThreads, 0, stream>>>(student, teacher, inv_t, B, C,
                                                                  loss, lse_s, lse_t);
  else
    kl_fwd_kernel<kThreads><<<blocks_for<kThreads>(B), kThreads, 0, stream>>>(
        student, teacher, inv_t, B, C, loss, lse_s, lse_t);
  check_launch("kl_div");
}

void kl_div_backward(const float* student, const float* teacher, float temperature,
                     const float* lse_s, const float* lse_t, const float* gloss,
                     bool gloss_broadcast, float grad_scale, int64_t B, int64_t C, float* gstudent,
                     cudaStream_t stream) {
  if (B == 0 || C == 0) return;
  const float inv_t = 1.f / temperature;
  const int64_t gstride = gloss_broadcast ? 0 : 1;
  if (warp_rows(C))
    kl_bwd_kernel<32><<<blocks_for<32>(B), kThreads, 0, stream>>>(
        student, teacher, inv_t, lse_s, lse_t, gloss, gstride, grad_scale, B, C, gstudent);
  else
    kl_bwd_kernel<kThreads><<<blocks_for<kThreads>(B), kThreads, 0, stream>>>(
        student, teacher, inv_t, lse_s, lse_t, gloss, gstride, grad_scale, B, C, gstudent);
  check_launch("kl_div_backward");
}

}  // namespace mokd::kernels
