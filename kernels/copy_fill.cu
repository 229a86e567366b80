// Strided copy with dtype conversion (f32/bf16/i32/i64/f64/u8, any strides, same shape) and fill.
// Memory traffic: copy reads each source element once and writes each destination element once
// (gathers through the strides, so bandwidth drops for transposed sources); fill writes n elements.
// Dims both sides walk contiguously are merged first: a contiguous conversion (f32 <-> bf16 casts
// of mixed precision) runs without index math, strided ones with 32-bit div/mod where they fit.
#include <climits>
#include <type_traits>

#include "engine/bf16.h"
#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

// Conversions as the CPU backend does them (through double; bf16 via f32, round-to-nearest-even).
template <class T>
struct Io;
template <>
struct Io<float> {
  static __device__ double load(const float* p) { return *p; }
  static __device__ void store(float* p, double v) { *p = static_cast<float>(v); }
};
template <>
struct Io<double> {
  static __device__ double load(const double* p) { return *p; }
  static __device__ void store(double* p, double v) { *p = v; }
};
template <>
struct Io<int32_t> {
  static __device__ double load(const int32_t* p) { return *p; }
  static __device__ void store(int32_t* p, double v) { *p = static_cast<int32_t>(v); }
};
template <>
struct Io<int64_t> {
  static __device__ double load(const int64_t* p) { return static_cast<double>(*p); }
  static __device__ void store(int64_t* p, double v) { *p = static_cast<int64_t>(v); }
};
template <>
struct Io<uint8_t> {
  static __device__ double load(const uint8_t* p) { return *p; }
  static __device__ void store(uint8_t* p, double v) { *p = u8_from_double(v); }
};
template <>
struct Io<bf16> {
  static __device__ double load(const bf16* p) { return bf16_to_float(*p); }
  static __device__ void store(bf16* p, double v) { *p = float_to_bf16(static_cast<float>(v)); }
};

// One element converted: same type copied exactly (also i64 beyond 2^53), f32 <-> bf16 directly
// (the same rounding as through double), the rest through double as the CPU backend does.
template <class S, class D>
__device__ __forceinline__ void convert(const S* src, D* dst) {
  if constexpr (std::is_same_v<S, D>)
    *dst = *src;
  else if constexpr (std::is_same_v<S, float> && std::is_same_v<D, bf16>)
    *dst = float_to_bf16(*src);
  else if constexpr (std::is_same_v<S, bf16> && std::is_same_v<D, float>)
    *dst = bf16_to_float(*src);
  else
    Io<D>::store(dst, Io<S>::load(src));
}

// Both sides contiguous (after collapse_dims): no index math.
template <class S, class D>
__global__ void copy_contig_kernel(const S* src, D* dst, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    convert(src + i, dst + i);
}

// V consecutive elements of the innermost dim per thread (V > 1 when that dim is contiguous on
// both sides and a multiple of V): the index math is paid once per V elements.
template <class I, int V, class S, class D>
__global__ void copy_kernel(const S* src, D* dst, StridedDesc d, int64_t n) {
  const int64_t groups = n / V;
  for (int64_t gi = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; gi < groups;
       gi += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    int64_t so, dof;
    strided_offsets<I>(d, gi * V, so, dof);
#pragma unroll
    for (int v = 0; v < V; ++v) convert(src + so + v, dst + dof + v);
  }
}

template <class S, class D>
void launch_copy(const S* src, D* dst, const StridedDesc& d, int64_t n, cudaStream_t st) {
  if (d.rank <= 1 && (d.rank == 0 || (d.sa[0] == 1 && d.sb[0] == 1))) {
    copy_contig_kernel<<<grid_for(n), kThreads, 0, st>>>(src, dst, n);
    return;
  }
  const int last = d.rank - 1;
  const bool vec4 = d.sa[last] == 1 && d.sb[last] == 1 && d.shape[last] % 4 == 0;
  if (vec4 && n <= INT32_MAX)
    copy_kernel<uint32_t, 4><<<grid_for(n / 4), kThreads, 0, st>>>(src, dst, d, n);
  else if (n <= INT32_MAX)
    copy_kernel<uint32_t, 1><<<grid_for(n), kThreads, 0, st>>>(src, dst, d, n);
  else
    copy_kernel<int64_t, 1><<<grid_for(n), kThreads, 0, st>>>(src, dst, d, n);
}

template <class S>
void copy_from(const S* src, void* dst, DType dt, const StridedDesc& d, int64_t n,
               cudaStream_t st) {
  switch (dt) {
    case DType::F32:
      launch_copy(src, static_cast<float*>(dst), d, n, st);
      break;
    case DType::F64:
      launch_copy(src, static_cast<double*>(dst), d, n, st);
      break;
    case DType::I32:
      launch_copy(src, static_cast<int32_t*>(dst), d, n, st);
      break;
    case DType::I64:
      launch_copy(src, static_cast<int64_t*>(dst), d, n, st);
      break;
    case DType::BF16:
      launch_copy(src, static_cast<bf16*>(dst), d, n, st);
      break;
    case DType::U8:
      launch_copy(src, static_cast<uint8_t*>(dst), d, n, st);
      break;
  }
  check_launch("copy_strided");
}

template <class T>
__global__ void fill_kernel(T* dst, T v, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[i] = v;
}

template <class T>
void fill_typed(T* dst, T v, int64_t n, cudaStream_t st) {
  fill_kernel<<<grid_for(n), kThreads, 0, st>>>(dst, v, n);
  check_launch("fill");
}

}  // namespace

void copy_strided(const void* src, DType st, void* dst, DType dt, const StridedDesc& desc,
                  int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  StridedDesc d = desc;
  collapse_dims(d);
  switch (st) {
    case DType::F32:
      copy_from(static_cast<const float*>(src), dst, dt, d, n, stream);
      break;
    case DType::F64:
      copy_from(static_cast<const double*>(src), dst, dt, d, n, stream);
      break;
    case DType::I32:
      copy_from(static_cast<const int32_t*>(src), dst, dt, d, n, stream);
      break;
    case DType::I64:
      copy_from(static_cast<const int64_t*>(src), dst, dt, d, n, stream);
      break;
    case DType::BF16:
      copy_from(static_cast<const bf16*>(src), dst, dt, d, n, stream);
      break;
    case DType::U8:
      copy_from(static_cast<const uint8_t*>(src), dst, dt, d, n, stream);
      break;
  }
}

void fill(void* dst, DType t, double value, int64_t n, cudaStream_t stream) {
  if (n == 0) return;
  // The value converted once on the host, exactly as the CPU backend's store_from_double.
  switch (t) {
    case DType::F32:
      fill_typed(static_cast<float*>(dst), static_cast<float>(value), n, stream);
      break;
    case DType::F64:
      fill_typed(static_cast<double*>(dst), value, n, stream);
      break;
    case DType::I32:
      fill_typed(static_cast<int32_t*>(dst), static_cast<int32_t>(value), n, stream);
      break;
    case DType::I64:
      fill_typed(static_cast<int64_t*>(dst), static_cast<int64_t>(value), n, stream);
      break;
    case DType::BF16: {
      bf16 h = float_to_bf16(static_cast<float>(value));
      fill_typed(static_cast<uint16_t*>(dst), h.bits, n, stream);
      break;
    }
    case DType::U8:
      fill_typed(static_cast<uint8_t*>(dst), u8_from_double(value), n, stream);
      break;
  }
}

}  // namespace mokd::kernels
