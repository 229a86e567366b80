#include "engine/rng.h"

namespace mokd {

uint64_t Generator::mix(uint64_t seed, uint64_t stream) {
  // splitmix64 over (seed, stream): distinct streams of one seed get unrelated keys.
  uint64_t z =
      seed * 0x9E3779B97F4A7C15ull + stream * 0xBF58476D1CE4E5B9ull + 0x94D049BB133111EBull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace mokd
