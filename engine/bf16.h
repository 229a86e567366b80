// bfloat16 <-> float conversion, round-to-nearest-even, NaN preserved (quietened); the f64 -> u8
// conversion that every backend's copy uses.
// Host and device code share these (MOKD_HD expands to __host__ __device__ under nvcc).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MOKD_HD __host__ __device__ __forceinline__
#else
#define MOKD_HD inline
#endif

namespace mokd {

struct bf16 {
  uint16_t bits;
};

MOKD_HD uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

MOKD_HD bf16 float_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
    return bf16{static_cast<uint16_t>((u >> 16) | 0x0040u)};  // NaN: keep sign, force quiet bit
  }
  // Round to nearest, ties to even: add 0x7fff plus the lowest kept bit.
  uint32_t lsb = (u >> 16) & 1u;
  u += 0x7fffu + lsb;
  return bf16{static_cast<uint16_t>(u >> 16)};
}

MOKD_HD float bf16_to_float(bf16 h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Activation storage (engine/kernel_args.h): kernels keep f32 or bf16 activations in memory and
// compute in f32. Values widen exactly on load and round to nearest even once on store.
MOKD_HD float load_f32(float v) { return v; }
MOKD_HD float load_f32(bf16 v) { return bf16_to_float(v); }
template <class T>
MOKD_HD T store_as(float v);
template <>
MOKD_HD float store_as<float>(float v) {
  return v;
}
template <>
MOKD_HD bf16 store_as<bf16>(float v) {
  return float_to_bf16(v);
}

// f64 -> u8: truncation toward zero, saturated to [0, 255]; NaN gives 0.
MOKD_HD uint8_t u8_from_double(double v) {
  return v >= 255.0 ? uint8_t{255} : v >= 1.0 ? static_cast<uint8_t>(v) : uint8_t{0};
}

}  // namespace mokd
