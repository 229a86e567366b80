// CPU backend: registration, copies between any strides and dtypes, fills and random draws.
#include "engine/cpu/cpu_backend.h"

#include <cmath>
#include <cstring>

#include "engine/bf16.h"
#include "engine/rng.h"

namespace mokd {

Backend& cpu_backend() {
  static CpuBackend b;
  return b;
}

namespace {

double load_as_double(const char* p, DType t) {
  switch (t) {
    case DType::F32: {
      float v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::F64: {
      double v;
      std::memcpy(&v, p, 8);
      return v;
    }
    case DType::BF16: {
      bf16 h;
      std::memcpy(&h, p, 2);
      return bf16_to_float(h);
    }
    case DType::I32: {
      int32_t v;
      std::memcpy(&v, p, 4);
      return v;
    }
    case DType::I64: {
      int64_t v;
      std::memcpy(&v, p, 8);
      return static_cast<double>(v);
    }
    case DType::U8:
      return static_cast<unsigned char>(*p);
  }
  return 0;
}

void store_from_double(char* p, DType t, double v) {
  switch (t) {
    case DType::F32: {
      float f = static_cast<float>(v);
      std::memcpy(p, &f, 4);
      return;
    }
    case DType::F64: {
      std::memcpy(p, &v, 8);
      return;
    }
    case DType::BF16: {
      bf16 h = float_to_bf16(static_cast<float>(v));
      std::memcpy(p, &h, 2);
      return;
    }
    case DType::I32: {
      int32_t i = static_cast<int32_t>(v);
      std::memcpy(p, &i, 4);
      return;
    }
    case DType::I64: {
      int64_t i = static_cast<int64_t>(v);
      std::memcpy(p, &i, 8);
      return;
    }
    case DType::U8:
      *p = static_cast<char>(u8_from_double(v));
      return;
  }
}

// Calls fn(src_elem_offset, dst_elem_offset, inner_len, src_inner_stride, dst_inner_stride) for
// each run along the last dim.
template <class Fn>
void for_each_row(const Shape& shape, const Shape& sst, const Shape& dst_st, Fn fn) {
  int64_t rank = static_cast<int64_t>(shape.size());
  if (rank == 0) {
    fn(0, 0, 1, 1, 1);
    return;
  }
  int64_t inner = shape[rank - 1];
  int64_t rows = inner ? shape_numel(shape) / inner : 0;
  std::vector<int64_t> idx(rank, 0);
  int64_t so = 0, d = 0;
  for (int64_t r = 0; r < rows; ++r) {
    fn(so, d, inner, sst[rank - 1], dst_st[rank - 1]);
    for (int64_t k = rank - 2; k >= 0; --k) {  // odometer over the outer dims
      ++idx[k];
      so += sst[k];
      d += dst_st[k];
      if (idx[k] < shape[k]) break;
      so -= sst[k] * shape[k];
      d -= dst_st[k] * shape[k];
      idx[k] = 0;
    }
  }
}

}  // namespace

void CpuBackend::copy(const Tensor& src, Tensor& dst) {
  MOKD_CHECK(src.device().is_cpu() && dst.device().is_cpu(), "cpu copy: ", src.str(), " -> ",
             dst.str());
  MOKD_CHECK(src.shape() == dst.shape(), "cpu copy: shapes differ: ", src.str(), " -> ", dst.str());
  if (src.numel() == 0) return;
  if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
    if (src.raw_data() != dst.raw_data())
      std::memmove(dst.raw_data(), src.raw_data(), src.nbytes());
    return;
  }
  const char* s = static_cast<const char*>(src.raw_data());
  char* d = static_cast<char*>(dst.raw_data());
  DType st = src.dtype(), dt = dst.dtype();
  size_t ss = dtype_size(st), ds = dtype_size(dt);
  if (st == DType::F32 && dt == DType::F32) {
    for_each_row(src.shape(), src.strides(), dst.strides(),
                 [&](int64_t so, int64_t dof, int64_t n, int64_t si, int64_t di) {
                   const float* a = reinterpret_cast<const float*>(s) + so;
                   float* b = reinterpret_cast<float*>(d) + dof;
                   for (int64_t i = 0; i < n; ++i) b[i * di] = a[i * si];
                 });
    return;
  }
  for_each_row(src.shape(), src.strides(), dst.strides(),
               [&](int64_t so, int64_t dof, int64_t n, int64_t si, int64_t di) {
                 for (int64_t i = 0; i < n; ++i)
                   store_from_double(d + (dof + i * di) * ds, dt,
                                     load_as_double(s + (so + i * si) * ss, st));
               });
}

void CpuBackend::fill(Tensor& dst, double value) {
  MOKD_CHECK(dst.device().is_cpu() && dst.is_contiguous(),
             "cpu fill: needs a contiguous cpu tensor, got ", dst.str());
  char* d = static_cast<char*>(dst.raw_data());
  int64_t n = dst.numel();
  if (dst.dtype() == DType::F32) {
    float v = static_cast<float>(value);
    float* p = reinterpret_cast<float*>(d);
    for (int64_t i = 0; i < n; ++i) p[i] = v;
    return;
  }
  size_t es = dtype_size(dst.dtype());
  store_from_double(d, dst.dtype(), value);
  for (int64_t i = 1; i < n; ++i) std::memcpy(d + i * es, d, es);
}

void CpuBackend::copy_to_host(void* host_dst, const void* dev_src, size_t nbytes) {
  std::memcpy(host_dst, dev_src, nbytes);
}

void CpuBackend::copy_from_host(void* dev_dst, const void* host_src, size_t nbytes) {
  std::memcpy(dev_dst, host_src, nbytes);
}

void CpuBackend::fill_uniform(Tensor& dst, float lo, float hi, RngKey key) {
  cpu_expect_f32(dst, "fill_uniform", "dst");
  float* p = dst.data<float>();
  int64_t n = dst.numel();
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) p[i] = lo + (hi - lo) * philox_uniform(key, i);
}

void CpuBackend::fill_normal(Tensor& dst, float mean, float std, RngKey key) {
  cpu_expect_f32(dst, "fill_normal", "dst");
  float* p = dst.data<float>();
  int64_t n = dst.numel();
  // Box-Muller on words 2i and 2i+1 (u1 in (0, 1] so the log is finite).
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float u1 = 1.0f - philox_uniform(key, 2 * i);
    float u2 = philox_uniform(key, 2 * i + 1);
    float r = std::sqrt(-2.0f * std::log(u1));
    p[i] = mean + std * r * std::cos(6.283185307179586f * u2);
  }
}

void CpuBackend::bernoulli_scaled(Tensor& dst, float keep_prob, RngKey key) {
  cpu_expect_f32(dst, "bernoulli_scaled", "dst");
  float* p = dst.data<float>();
  int64_t n = dst.numel();
  float inv = keep_prob > 0 ? 1.0f / keep_prob : 0.0f;
  for (int64_t i = 0; i < n; ++i) p[i] = philox_uniform(key, i) < keep_prob ? inv : 0.0f;
}

}  // namespace mokd
