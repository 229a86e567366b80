// Random numbers: Philox4x32-10 (Salmon et al., SC'11), a counter-based generator, so element i
// of a draw is a pure function of (seed, counter) and CPU and CUDA produce the same values.
//
// Streams: a Generator is (seed, stream); its counter advances by the number of values drawn.
// The project uses three documented streams so that, e.g., turning dropout on does not change
// the weight initialisation or the data order:
//   Stream::Init    parameter initialisation
//   Stream::Dropout dropout and drop-path masks
//   Stream::Data    shuffling and augmentation
#pragma once
#include <cstdint>

#include "engine/bf16.h"          // MOKD_HD
#include "engine/kernel_types.h"  // RngKey

namespace mokd {

enum class Stream : uint64_t { Init = 1, Dropout = 2, Data = 3 };

struct Philox4 {
  uint32_t v[4];
};

// One Philox4x32-10 block: counter (c0..c3) under key (k0, k1).
MOKD_HD Philox4 philox4x32(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                           uint32_t k1) {
  const uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int r = 0; r < 10; ++r) {
    uint64_t p0 = static_cast<uint64_t>(M0) * c0;
    uint64_t p1 = static_cast<uint64_t>(M1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0;
    c1 = n1;
    c2 = n2;
    c3 = n3;
    k0 += W0;
    k1 += W1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// The i-th 32-bit random word of key: block i/4 of the counter, word i%4.
MOKD_HD uint32_t philox_word(RngKey key, uint64_t i) {
  uint64_t n = key.offset + i;
  uint64_t block = n >> 2;
  Philox4 r = philox4x32(static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0, 0,
                         static_cast<uint32_t>(key.seed), static_cast<uint32_t>(key.seed >> 32));
  return r.v[n & 3];
}

// Uniform in [0, 1) with 24 random bits (exactly representable in f32).
MOKD_HD float philox_uniform(RngKey key, uint64_t i) {
  return static_cast<float>(philox_word(key, i) >> 8) * (1.0f / 16777216.0f);
}

// A seeded stream of keys. Each draw of n values reserves n counters.
class Generator {
 public:
  Generator() = default;
  Generator(uint64_t seed, Stream stream) : seed_(mix(seed, static_cast<uint64_t>(stream))) {}
  // Key for a draw of n values; advances the counter (rounded up to whole Philox blocks, and
  // twice n so that normal draws, which use two words per value, never overlap the next draw).
  RngKey next(uint64_t n) {
    RngKey k{seed_, counter_};
    counter_ += (2 * n + 3) & ~uint64_t(3);
    return k;
  }
  uint64_t counter() const { return counter_; }
  void set_counter(uint64_t c) { counter_ = c; }
  uint64_t seed() const { return seed_; }
  // Host draws (data order, augmentation parameters).
  uint32_t next_u32() { return philox_word(next(1), 0); }
  float next_uniform() { return philox_uniform(next(1), 0); }

 private:
  static uint64_t mix(uint64_t seed, uint64_t stream);  // splitmix64 of both
  uint64_t seed_ = 0;
  uint64_t counter_ = 0;
};

}  // namespace mokd
