// torch's CPU randperm on std::mt19937 and timm's RepeatAugSampler index lists.
#include "io/repeated_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include "engine/error.h"

namespace mokd::data {

std::vector<int64_t> torch_randperm(int64_t n, uint64_t seed) {
  MOKD_CHECK(n >= 0, "torch_randperm: n = ", n, " must be >= 0");
  std::mt19937 gen(static_cast<uint32_t>(seed));
  std::vector<int64_t> perm(static_cast<size_t>(n));
  if (n < static_cast<int64_t>(std::numeric_limits<uint32_t>::max() / 20)) {
    for (int64_t i = 0; i < n; ++i) perm[i] = i;
    for (int64_t i = 0; i + 1 < n; ++i) {
      // torch: int64_t z = random() % (n - i), the 32-bit word widened first.
      const int64_t z = static_cast<int64_t>(gen()) % (n - i);
      std::swap(perm[i], perm[z + i]);
    }
    return perm;
  }
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t hi = gen();
    const uint64_t r = (hi << 32) | gen();
    const int64_t z = static_cast<int64_t>(r % static_cast<uint64_t>(i + 1));
    perm[i] = perm[z];
    perm[z] = i;
  }
  return perm;
}

namespace {

void check_args(int64_t n, const RepeatedAugmentOptions& opt, int world) {
  MOKD_CHECK(n >= 0, "repeated augmentation: dataset size ", n, " must be >= 0");
  MOKD_CHECK(world >= 1, "repeated augmentation: world size ", world, " must be >= 1");
  MOKD_CHECK(opt.num_repeats >= 1, "repeated augmentation: num_repeats ", opt.num_repeats,
             " must be >= 1");
  MOKD_CHECK(opt.selected_round >= 0, "repeated augmentation: selected_round ", opt.selected_round,
             " must be >= 0");
  MOKD_CHECK(opt.selected_ratio >= 0 && std::isfinite(opt.selected_ratio),
             "repeated augmentation: selected_ratio ", opt.selected_ratio,
             " must be >= 0 (0: the world size)");
  MOKD_CHECK(n <= (int64_t(1) << 40) / opt.num_repeats, "repeated augmentation: dataset size ", n,
             " times ", opt.num_repeats, " repeats is beyond 2^40");
}

}  // namespace

int64_t repeated_augment_length(int64_t n, const RepeatedAugmentOptions& opt, int world) {
  check_args(n, opt, world);
  const int64_t total = n * opt.num_repeats;
  const int64_t per_rank = (total + world - 1) / world;  // ceil; exact where timm's float is
  const double ratio = opt.selected_ratio > 0 ? opt.selected_ratio : static_cast<double>(world);
  // timm: floor(n // round * round / ratio), else ceil(n / ratio), in double (n < 2^53).
  int64_t selected;
  if (opt.selected_round > 0 && n >= opt.selected_round) {
    const int64_t rounded = n / opt.selected_round * opt.selected_round;
    selected = static_cast<int64_t>(std::floor(static_cast<double>(rounded) / ratio));
  } else {
    selected = static_cast<int64_t>(std::ceil(static_cast<double>(n) / ratio));
  }
  return std::min(selected, per_rank);
}

std::vector<int64_t> repeated_augment_indices(int64_t n, int64_t epoch, uint64_t seed,
                                              const RepeatedAugmentOptions& opt, int rank,
                                              int world) {
  const int64_t len = repeated_augment_length(n, opt, world);
  MOKD_CHECK(rank >= 0 && rank < world, "repeated augmentation: rank ", rank, " outside [0, ",
             world, ")");
  MOKD_CHECK(epoch >= 0, "repeated augmentation: epoch ", epoch, " must be >= 0");
  std::vector<int64_t> order;
  if (opt.shuffle) {
    order = torch_randperm(n, seed + static_cast<uint64_t>(epoch));
  } else {
    order.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) order[i] = i;
  }
  // L[k] = order[k / num_repeats]; wrap-around pads the last ranks as timm's i % |L| does.
  const int64_t total = n * opt.num_repeats;
  std::vector<int64_t> out(static_cast<size_t>(len));
  for (int64_t j = 0; j < len; ++j) {
    const int64_t k = (rank + j * world) % total;
    out[j] = order[k / opt.num_repeats];
  }
  return out;
}

}  // namespace mokd::data
