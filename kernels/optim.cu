// Optimizer updates in place, f32: Adam/AdamW and SGD (momentum, dampening, nesterov, weight
// decay), element for element the formulas of engine/cpu/optim.cpp (scalars formed on the host in
// double, as PyTorch), one tensor per launch or many tensors per launch (multi-tensor forms), plus
// the multi-tensor sum of squares and in-place scale behind gradient clipping. Memory traffic: Adam
// reads p, g, m, v and writes p, m, v (28 bytes per parameter); SGD reads p, g (and the buffer) and
// writes p (and the buffer).
//
// Multi-tensor launches: the tensors' pointers, sizes and scalars travel BY VALUE as one kernel
// argument (a struct of up to kAdamMulti / kSgdMulti / kListMulti entries, under the 4 KiB
// parameter limit), rather than as a descriptor table uploaded to device memory: an upload would
// need a pinned staging buffer kept alive until the copy ran, or a host sync (copy_from_host
// synchronises), while kernel arguments are copied by the launch itself, cost nothing to free and
// keep a training step free of host syncs. Longer lists take one launch per chunk of entries.
// Inside a launch, each block works on one tile of kMultiTile elements of one tensor; a prefix sum
// of tiles per entry (block_start) maps a block to its tensor, so a tensor of any size fits in one
// launch and small tensors take a single block each.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

struct AdamScalars {
  float neg_step_size, bc2_sqrt, decay, wd, w1, beta2, w2, eps;
  bool has_wd, decoupled;
};

AdamScalars adam_scalars(const AdamHyper& h) {
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
  return s;
}

__device__ __forceinline__ float torch_lerp(float self, float end, float w) {
  return fabsf(w) < 0.5f ? self + w * (end - self) : end - (end - self) * (1.f - w);
}

// One element of Adam; the per-tensor and the multi-tensor kernels share it, so they agree bit for
// bit.
// p16 (may be null): the param's bf16 copy, rewritten with the new value in the same pass.
__device__ __forceinline__ void adam_element(float* p, const float* g, float* m, float* v,
                                             bf16* p16, int64_t i, const AdamScalars& s) {
  float pi = p[i], gi = g[i];
  if (s.has_wd) {
    if (s.decoupled)
      pi = pi * s.decay;
    else
      gi = gi + s.wd * pi;
  }
  float mi = torch_lerp(m[i], gi, s.w1);
  float vi = v[i] * s.beta2;
  vi = vi + s.w2 * gi * gi;
  float denom = sqrtf(vi) / s.bc2_sqrt + s.eps;
  m[i] = mi;
  v[i] = vi;
  p[i] = pi + s.neg_step_size * mi / denom;
  if (p16) p16[i] = store_as<bf16>(p[i]);
}

__global__ void adam_kernel(float* p, const float* g, float* m, float* v, int64_t n,
                            AdamScalars s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    adam_element(p, g, m, v, nullptr, i, s);
}

struct SgdScalars {
  float wd, mom, keep, neg_lr;
  bool has_wd, use_momentum, first, nesterov;
};

SgdScalars sgd_scalars(const SgdHyper& h) {
  SgdScalars s;
  s.wd = h.weight_decay;
  s.mom = h.momentum;
  s.keep = static_cast<float>(1.0 - static_cast<double>(h.dampening));
  s.neg_lr = -h.lr;
  s.has_wd = h.weight_decay != 0.f;
  s.use_momentum = h.momentum != 0.f;
  s.first = h.first_step;
  s.nesterov = h.nesterov;
  return s;
}

__device__ __forceinline__ void sgd_element(float* p, const float* g, float* buf, bf16* p16,
                                            int64_t i, const SgdScalars& s) {
  float gi = g[i];
  if (s.has_wd) gi = gi + s.wd * p[i];
  if (s.use_momentum) {
    float b = s.first ? gi : buf[i] * s.mom + s.keep * gi;
    buf[i] = b;
    gi = s.nesterov ? gi + s.mom * b : b;
  }
  p[i] = p[i] + s.neg_lr * gi;
  if (p16) p16[i] = store_as<bf16>(p[i]);
}

__global__ void sgd_kernel(float* p, const float* g, float* buf, int64_t n, SgdScalars s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    sgd_element(p, g, buf, nullptr, i, s);
}

// ---- multi-tensor ----

constexpr int kMultiTile = kThreads * 8;  // elements per block: 8 per thread
constexpr int kAdamMulti = 40;            // entries per launch (kernel arguments <= 4 KiB)
constexpr int kSgdMulti = 48;
constexpr int kListMulti = 128;  // sum of squares, scale

struct AdamMultiArgs {
  float* p[kAdamMulti];
  const float* g[kAdamMulti];
  float* m[kAdamMulti];
  float* v[kAdamMulti];
  bf16* p16[kAdamMulti];
  int64_t n[kAdamMulti];
  AdamScalars s[kAdamMulti];
  int block_start[kAdamMulti + 1];  // entry t owns blocks [block_start[t], block_start[t + 1])
  int count;
};

struct SgdMultiArgs {
  float* p[kSgdMulti];
  const float* g[kSgdMulti];
  float* buf[kSgdMulti];
  bf16* p16[kSgdMulti];
  int64_t n[kSgdMulti];
  SgdScalars s[kSgdMulti];
  int block_start[kSgdMulti + 1];
  int count;
};

struct ListArgs {
  float* x[kListMulti];  // read-only for the sum of squares
  int64_t n[kListMulti];
  int block_start[kListMulti + 1];
  int count;
};

// The traditional limit on kernel parameters (larger needs CUDA 12.1+ and Volta+): stay under it.
static_assert(sizeof(AdamMultiArgs) <= 4000, "AdamMultiArgs exceeds the kernel parameter limit");
static_assert(sizeof(SgdMultiArgs) <= 4000, "SgdMultiArgs exceeds the kernel parameter limit");
static_assert(sizeof(ListArgs) + 2 * sizeof(void*) <= 4000,
              "ListArgs exceeds the kernel parameter limit");

// The entry owning this block: the last t with block_start[t] <= blockIdx.x (binary search).
__device__ __forceinline__ int entry_of_block(const int* block_start, int count) {
  int lo = 0, hi = count - 1;
  const int b = static_cast<int>(blockIdx.x);
  while (lo < hi) {
    int mid = (lo + hi + 1) >> 1;
    if (block_start[mid] <= b)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// [begin, end) of this block's tile inside entry t.
__device__ __forceinline__ void tile_of_block(const int* block_start, int t, int64_t n,
                                              int64_t& begin, int64_t& end) {
  begin = static_cast<int64_t>(blockIdx.x - block_start[t]) * kMultiTile;
  end = begin + kMultiTile < n ? begin + kMultiTile : n;
}

__global__ void adam_multi_kernel(AdamMultiArgs a) {
  const int t = entry_of_block(a.block_start, a.count);
  int64_t begin, end;
  tile_of_block(a.block_start, t, a.n[t], begin, end);
  const AdamScalars s = a.s[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    adam_element(a.p[t], a.g[t], a.m[t], a.v[t], a.p16[t], i, s);
}

__global__ void sgd_multi_kernel(SgdMultiArgs a) {
  const int t = entry_of_block(a.block_start, a.count);
  int64_t begin, end;
  tile_of_block(a.block_start, t, a.n[t], begin, end);
  const SgdScalars s = a.s[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    sgd_element(a.p[t], a.g[t], a.buf[t], a.p16[t], i, s);
}

// partials[block] = sum of squares of this block's tile, in double (fixed order within the block).
__global__ void sum_squares_multi_kernel(ListArgs a, double* partials) {
  __shared__ double sm[kThreads / 32];
  const int t = entry_of_block(a.block_start, a.count);
  int64_t begin, end;
  tile_of_block(a.block_start, t, a.n[t], begin, end);
  const float* x = a.x[t];
  double acc = 0;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    double v = x[i];
    acc += v * v;
  }
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int w = 0; w < kThreads / 32; ++w) s += sm[w];
    partials[blockIdx.x] = s;
  }
}

// out[0] += the sum of the partials, one block, fixed order: deterministic run to run.
__global__ void sum_partials_kernel(const double* partials, int64_t np, float* out) {
  __shared__ double sm[kThreads / 32];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < np; i += blockDim.x) acc += partials[i];
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) sm[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double s = 0;
    for (int w = 0; w < kThreads / 32; ++w) s += sm[w];
    out[0] += static_cast<float>(s);
  }
}

// x *= *scale: the scale is read on the device (the clip coefficient), never by the host.
__global__ void scale_multi_kernel(ListArgs a, const float* scale) {
  const int t = entry_of_block(a.block_start, a.count);
  int64_t begin, end;
  tile_of_block(a.block_start, t, a.n[t], begin, end);
  const float c = *scale;
  float* x = a.x[t];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) x[i] = x[i] * c;
}

int64_t tiles(int64_t n) { return (n + kMultiTile - 1) / kMultiTile; }

// Packs the entries with n > 0 into chunks of at most `cap` entries (and under 2^31 blocks):
// fill(slot, entry) writes slot `slot` of the current chunk, launch(blocks) sends the chunk.
template <class SizeOf, class Fill, class Launch>
void chunked(size_t count, int cap, int* block_start, int& chunk_count, SizeOf&& size_of,
             Fill&& fill, Launch&& launch) {
  constexpr int64_t kMaxBlocks = 0x7fffffff;
  chunk_count = 0;
  block_start[0] = 0;
  for (size_t e = 0; e < count; ++e) {
    const int64_t n = size_of(e);
    if (n == 0) continue;
    const int64_t b = tiles(n);
    if (chunk_count == cap || block_start[chunk_count] + b > kMaxBlocks) {
      launch(block_start[chunk_count]);
      chunk_count = 0;
    }
    if (block_start[chunk_count] + b > kMaxBlocks)  // alone in its chunk and still too large
      throw CudaError(detail::concat("multi-tensor kernel: a tensor of ", n,
                                     " elements needs more than 2^31 blocks"));
    fill(chunk_count, e);
    block_start[chunk_count + 1] = static_cast<int>(block_start[chunk_count] + b);
    ++chunk_count;
  }
  if (chunk_count > 0) launch(block_start[chunk_count]);
}

}  // namespace

void adam_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamHyper& h,
                 cudaStream_t stream) {
  if (n == 0) return;
  adam_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, g, m, v, n, adam_scalars(h));
  check_launch("adam_update");
}

void sgd_update(float* p, const float* g, float* buf, int64_t n, const SgdHyper& h,
                cudaStream_t stream) {
  if (n == 0) return;
  sgd_kernel<<<grid_for(n), kThreads, 0, stream>>>(p, g, buf, n, sgd_scalars(h));
  check_launch("sgd_update");
}

void adam_update_multi(const AdamMultiEntry* list, size_t count, cudaStream_t stream) {
  AdamMultiArgs a{};  // zeroed: unused slots travel as zeros
  chunked(
      count, kAdamMulti, a.block_start, a.count, [&](size_t e) { return list[e].n; },
      [&](int slot, size_t e) {
        const AdamMultiEntry& r = list[e];
        a.p[slot] = r.p;
        a.g[slot] = r.g;
        a.m[slot] = r.m;
        a.v[slot] = r.v;
        a.p16[slot] = r.p16;
        a.n[slot] = r.n;
        a.s[slot] = adam_scalars(r.h);
      },
      [&](int blocks) {
        adam_multi_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
        check_launch("adam_update_multi");
      });
}

void sgd_update_multi(const SgdMultiEntry* list, size_t count, cudaStream_t stream) {
  SgdMultiArgs a{};  // zeroed: unused slots travel as zeros
  chunked(
      count, kSgdMulti, a.block_start, a.count, [&](size_t e) { return list[e].n; },
      [&](int slot, size_t e) {
        const SgdMultiEntry& r = list[e];
        a.p[slot] = r.p;
        a.g[slot] = r.g;
        a.buf[slot] = r.buf;
        a.p16[slot] = r.p16;
        a.n[slot] = r.n;
        a.s[slot] = sgd_scalars(r.h);
      },
      [&](int blocks) {
        sgd_multi_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a);
        check_launch("sgd_update_multi");
      });
}

int64_t sum_squares_multi_partials(const int64_t* ns, size_t count) {
  int64_t total = 0;
  for (size_t e = 0; e < count; ++e) total += tiles(ns[e]);
  return total;
}

void sum_squares_multi(const float* const* xs, const int64_t* ns, size_t count, float* out,
                       double* partials, cudaStream_t stream) {
  ListArgs a{};        // zeroed: unused slots travel as zeros
  int64_t offset = 0;  // partials written so far, by earlier chunks
  chunked(
      count, kListMulti, a.block_start, a.count, [&](size_t e) { return ns[e]; },
      [&](int slot, size_t e) {
        a.x[slot] = const_cast<float*>(xs[e]);  // the kernel only reads it
        a.n[slot] = ns[e];
      },
      [&](int blocks) {
        sum_squares_multi_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
            a, partials + offset);
        check_launch("sum_squares_multi");
        offset += blocks;
      });
  if (offset == 0) return;  // nothing but empty tensors: out unchanged
  sum_partials_kernel<<<1, kThreads, 0, stream>>>(partials, offset, out);
  check_launch("sum_squares_multi");
}

void scale_multi(float* const* xs, const int64_t* ns, size_t count, const float* scale,
                 cudaStream_t stream) {
  ListArgs a{};  // zeroed: unused slots travel as zeros
  chunked(
      count, kListMulti, a.block_start, a.count, [&](size_t e) { return ns[e]; },
      [&](int slot, size_t e) {
        a.x[slot] = xs[e];
        a.n[slot] = ns[e];
      },
      [&](int blocks) {
        scale_multi_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(a, scale);
        check_launch("scale_multi");
      });
}

}  // namespace mokd::kernels
