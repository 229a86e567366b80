// Non-causal scaled-dot-product attention, forward and backward, f32, head dims up to 128, any N.
// A straightforward first version (correct rather than fast): one block of 4 warps per
// (batch*head, 4 rows), grid (B*H, ceil(N / 4)); each warp owns one row and streams the other side
// in tiles of 32 rows staged in shared memory, one lane per tile row for the dot products, lanes
// across the head dim for the accumulations. Forward uses an online softmax and stores lse = max +
// log(sum exp); backward recomputes P = exp(scale q.k - lse) (flash-attention style) in two
// kernels: gq per query row, gk/gv per key row. f32 only: under MatmulPrecision::BF16
// engine/ops/attention.cpp does not reach these kernels; it runs batched bf16 Backend::gemm
// products around an f32 Backend::softmax (and softmax_backward). Memory traffic per (batch, head):
// forward reads q and out-side once and k, v once per 4 query rows (ceil(Nq / 4) times, from L2 for
// short sequences), writes out and lse once; backward reads k, v (gq kernel) and q, gout (gk/gv
// kernel) once per 4 rows and writes gq, gk, gv once.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

constexpr int kRowsPerBlock = 4;  // warps per block
constexpr int kTile = 32;         // other-side rows staged per step (one per lane)
constexpr int kPerLane = kAttnMaxDim / 32;

// Loads rows [t0, t0 + 32) of a [n, d] matrix into sm [32][d + 1] (zeros past n).
__device__ __forceinline__ void load_tile(const float* src, int64_t n, int d, int64_t t0,
                                          float* sm) {
  for (int idx = threadIdx.x; idx < kTile * d; idx += blockDim.x) {
    int j = idx / d, c = idx % d;
    sm[j * (d + 1) + c] = (t0 + j < n) ? src[(t0 + j) * d + c] : 0.f;
  }
}

__device__ __forceinline__ void load_row(const float* src, int d, float* sm, int lane) {
  for (int c = lane; c < d; c += 32) sm[c] = src[c];
}

__global__ void attn_fwd_kernel(const float* q, const float* k, const float* v, float scale,
                                float* out, float* lse, int64_t nq, int64_t nk, int d, int dv) {
  extern __shared__ float smem[];
  float* ks = smem;                   // [32][d + 1]
  float* vs = ks + kTile * (d + 1);   // [32][dv + 1]
  float* qs = vs + kTile * (dv + 1);  // [4][d]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t bh = blockIdx.x;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kRowsPerBlock + warp;
  const bool active = row < nq;
  const float* kb = k + bh * nk * d;
  const float* vb = v + bh * nk * dv;
  float* qw = qs + warp * d;
  if (active) load_row(q + (bh * nq + row) * d, d, qw, lane);

  float m = -INFINITY, l = 0.f, o[kPerLane] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t t0 = 0; t0 < nk; t0 += kTile) {
    __syncthreads();  // previous tile fully used (and qs written)
    load_tile(kb, nk, d, t0, ks);
    load_tile(vb, nk, dv, t0, vs);
    __syncthreads();
    if (!active) continue;
    const bool valid = t0 + lane < nk;
    float s = -INFINITY;
    if (valid) {
      float dot = 0.f;
      const float* kr = ks + lane * (d + 1);
      for (int c = 0; c < d; ++c) dot += qw[c] * kr[c];
      s = scale * dot;
    }
    float m_new = fmaxf(m, warp_max(s));
    float corr = expf(m - m_new);  // 0 on the first tile (m = -inf)
    float p = valid ? expf(s - m_new) : 0.f;
    l = l * corr + warp_sum(p);
    for (int t = 0; t < kPerLane; ++t) o[t] *= corr;
    int jn = nk - t0 < kTile ? static_cast<int>(nk - t0) : kTile;
    for (int j = 0; j < jn; ++j) {
      float pj = __shfl_sync(0xffffffffu, p, j);
      const float* vr = vs + j * (dv + 1);
      for (int t = 0; t < kPerLane; ++t) {
        int c = lane + 32 * t;
        if (c < dv) o[t] += pj * vr[c];
      }
    }
    m = m_new;
  }
  if (!active) return;
  float inv = 1.f / l;
  float* orow = out + (bh * nq + row) * dv;
  for (int t = 0; t < kPerLane; ++t) {
    int c = lane + 32 * t;
    if (c < dv) orow[c] = o[t] * inv;
  }
  if (lane == 0) lse[bh * nq + row] = m + logf(l);
}

// delta[i] = sum_c gout[i, c] * out[i, c] (warp per row)
__global__ void attn_delta_kernel(const float* out, const float* gout, float* delta, int64_t rows,
                                  int dv) {
  int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  int lane = threadIdx.x & 31;
  if (row >= rows) return;
  float s = 0.f;
  for (int c = lane; c < dv; c += 32) s += gout[row * dv + c] * out[row * dv + c];
  s = warp_sum(s);
  if (lane == 0) delta[row] = s;
}

// gq[i] = scale * sum_j ds_ij k_j, ds_ij = p_ij (gout_i . v_j - delta_i)
__global__ void attn_bwd_q_kernel(const float* q, const float* k, const float* v, const float* lse,
                                  const float* gout, const float* delta, float scale, float* gq,
                                  int64_t nq, int64_t nk, int d, int dv) {
  extern __shared__ float smem[];
  float* ks = smem;
  float* vs = ks + kTile * (d + 1);
  float* qs = vs + kTile * (dv + 1);   // [4][d]
  float* gs = qs + kRowsPerBlock * d;  // [4][dv]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t bh = blockIdx.x;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kRowsPerBlock + warp;
  const bool active = row < nq;
  const float* kb = k + bh * nk * d;
  const float* vb = v + bh * nk * dv;
  float* qw = qs + warp * d;
  float* gw = gs + warp * dv;
  float li = 0.f, di = 0.f;
  if (active) {
    load_row(q + (bh * nq + row) * d, d, qw, lane);
    load_row(gout + (bh * nq + row) * dv, dv, gw, lane);
    li = lse[bh * nq + row];
    di = delta[bh * nq + row];
  }
  float acc[kPerLane] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t t0 = 0; t0 < nk; t0 += kTile) {
    __syncthreads();
    load_tile(kb, nk, d, t0, ks);
    load_tile(vb, nk, dv, t0, vs);
    __syncthreads();
    if (!active) continue;
    float ds = 0.f;
    if (t0 + lane < nk) {
      const float* kr = ks + lane * (d + 1);
      const float* vr = vs + lane * (dv + 1);
      float dot = 0.f, dp = 0.f;
      for (int c = 0; c < d; ++c) dot += qw[c] * kr[c];
      for (int c = 0; c < dv; ++c) dp += gw[c] * vr[c];
      float p = expf(scale * dot - li);
      ds = p * (dp - di);
    }
    int jn = nk - t0 < kTile ? static_cast<int>(nk - t0) : kTile;
    for (int j = 0; j < jn; ++j) {
      float dsj = __shfl_sync(0xffffffffu, ds, j);
      const float* kr = ks + j * (d + 1);
      for (int t = 0; t < kPerLane; ++t) {
        int c = lane + 32 * t;
        if (c < d) acc[t] += dsj * kr[c];
      }
    }
  }
  if (!active) return;
  float* o = gq + (bh * nq + row) * d;
  for (int t = 0; t < kPerLane; ++t) {
    int c = lane + 32 * t;
    if (c < d) o[c] = scale * acc[t];
  }
}

// gv[j] = sum_i p_ij gout_i;  gk[j] = scale * sum_i ds_ij q_i
__global__ void attn_bwd_kv_kernel(const float* q, const float* k, const float* v, const float* lse,
                                   const float* gout, const float* delta, float scale, float* gk,
                                   float* gv, int64_t nq, int64_t nk, int d, int dv) {
  extern __shared__ float smem[];
  float* qt = smem;                            // [32][d + 1]
  float* gt = qt + kTile * (d + 1);            // [32][dv + 1]
  float* lt = gt + kTile * (dv + 1);           // [32]
  float* dt = lt + kTile;                      // [32]
  float* kw_all = dt + kTile;                  // [4][d]
  float* vw_all = kw_all + kRowsPerBlock * d;  // [4][dv]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t bh = blockIdx.x;
  const int64_t row = static_cast<int64_t>(blockIdx.y) * kRowsPerBlock + warp;  // key row
  const bool active = row < nk;
  const float* qb = q + bh * nq * d;
  const float* gb = gout + bh * nq * dv;
  float* kw = kw_all + warp * d;
  float* vw = vw_all + warp * dv;
  if (active) {
    load_row(k + (bh * nk + row) * d, d, kw, lane);
    load_row(v + (bh * nk + row) * dv, dv, vw, lane);
  }
  float ak[kPerLane] = {0.f, 0.f, 0.f, 0.f}, av[kPerLane] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t t0 = 0; t0 < nq; t0 += kTile) {
    __syncthreads();
    load_tile(qb, nq, d, t0, qt);
    load_tile(gb, nq, dv, t0, gt);
    for (int i = threadIdx.x; i < kTile; i += blockDim.x) {
      bool ok = t0 + i < nq;
      lt[i] = ok ? lse[bh * nq + t0 + i] : 0.f;
      dt[i] = ok ? delta[bh * nq + t0 + i] : 0.f;
    }
    __syncthreads();
    if (!active) continue;
    float p = 0.f, ds = 0.f;
    if (t0 + lane < nq) {
      const float* qr = qt + lane * (d + 1);
      const float* gr = gt + lane * (dv + 1);
      float dot = 0.f, dp = 0.f;
      for (int c = 0; c < d; ++c) dot += qr[c] * kw[c];
      for (int c = 0; c < dv; ++c) dp += gr[c] * vw[c];
      p = expf(scale * dot - lt[lane]);
      ds = p * (dp - dt[lane]);
    }
    int in = nq - t0 < kTile ? static_cast<int>(nq - t0) : kTile;
    for (int i = 0; i < in; ++i) {
      float pi = __shfl_sync(0xffffffffu, p, i);
      float dsi = __shfl_sync(0xffffffffu, ds, i);
      const float* qr = qt + i * (d + 1);
      const float* gr = gt + i * (dv + 1);
      for (int t = 0; t < kPerLane; ++t) {
        int c = lane + 32 * t;
        if (c < dv) av[t] += pi * gr[c];
        if (c < d) ak[t] += dsi * qr[c];
      }
    }
  }
  if (!active) return;
  float* okr = gk + (bh * nk + row) * d;
  float* ovr = gv + (bh * nk + row) * dv;
  for (int t = 0; t < kPerLane; ++t) {
    int c = lane + 32 * t;
    if (c < d) okr[c] = scale * ak[t];
    if (c < dv) ovr[c] = av[t];
  }
}

size_t fwd_smem(int d, int dv) {
  return sizeof(float) * (kTile * (d + 1) + kTile * (dv + 1) + kRowsPerBlock * d);
}
size_t bwd_q_smem(int d, int dv) {
  return sizeof(float) * (kTile * (d + 1) + kTile * (dv + 1) + kRowsPerBlock * (d + dv));
}
size_t bwd_kv_smem(int d, int dv) {
  return sizeof(float) *
         (kTile * (d + 1) + kTile * (dv + 1) + 2 * kTile + kRowsPerBlock * (d + dv));
}

dim3 attn_grid(int64_t rows, int64_t bh) {
  // x: batch*head (up to 2^31 - 1), y: row tiles (the caller checks <= 65535).
  return dim3(static_cast<unsigned>(bh),
              static_cast<unsigned>((rows + kRowsPerBlock - 1) / kRowsPerBlock));
}

}  // namespace

void attention(const float* q, const float* k, const float* v, float scale, float* out, float* lse,
               int64_t bh, int64_t nq, int64_t nk, int64_t d, int64_t dv, cudaStream_t stream) {
  if (bh == 0 || nq == 0) return;
  int di = static_cast<int>(d), dvi = static_cast<int>(dv);
  attn_fwd_kernel<<<attn_grid(nq, bh), kRowsPerBlock * 32, fwd_smem(di, dvi), stream>>>(
      q, k, v, scale, out, lse, nq, nk, di, dvi);
  check_launch("attention");
}

void attention_backward(const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* gout, float scale, float* gq, float* gk,
                        float* gv, float* delta, int64_t bh, int64_t nq, int64_t nk, int64_t d,
                        int64_t dv, cudaStream_t stream) {
  if (bh == 0) return;
  int di = static_cast<int>(d), dvi = static_cast<int>(dv);
  int64_t rows = bh * nq;
  if (rows > 0) {
    attn_delta_kernel<<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream>>>(out, gout, delta,
                                                                                 rows, dvi);
    check_launch("attention_backward");
    attn_bwd_q_kernel<<<attn_grid(nq, bh), kRowsPerBlock * 32, bwd_q_smem(di, dvi), stream>>>(
        q, k, v, lse, gout, delta, scale, gq, nq, nk, di, dvi);
    check_launch("attention_backward");
  }
  if (nk > 0) {
    attn_bwd_kv_kernel<<<attn_grid(nk, bh), kRowsPerBlock * 32, bwd_kv_smem(di, dvi), stream>>>(
        q, k, v, lse, gout, delta, scale, gk, gv, nq, nk, di, dvi);
    check_launch("attention_backward");
  }
}

}  // namespace mokd::kernels
