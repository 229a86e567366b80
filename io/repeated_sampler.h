// DeiT's repeated augmentation (Hoffer et al., Berman et al.) as timm's RepeatAugSampler draws it:
// each epoch shuffles the dataset with torch.randperm, repeats every index num_repeats times in a
// row, deals the list round-robin to the data-parallel ranks and keeps a shortened epoch per rank,
// so each rank sees a different augmentation of the same images. torch_randperm reproduces
// torch's CPU randperm bit for bit so that mokd's epoch order equals timm's.
#pragma once
#include <cstdint>
#include <vector>

namespace mokd::data {

// torch.randperm(n, generator=torch.Generator().manual_seed(seed)) on the CPU (int64 result).
// torch's CPU generator is a standard mt19937 seeded with the seed's low 32 bits; for
// n < 2^32 / 20 (214,748,364) torch swaps element i with i + (random() % (n - i)) for i = 0 .. n-2,
// random() one 32-bit word; from that n on it builds the permutation inside-out,
// z = random64() % (i + 1) for i = 0 .. n-1, random64() = (word << 32) | next word.
std::vector<int64_t> torch_randperm(int64_t n, uint64_t seed);

// timm's RepeatAugSampler arguments other than the dataset, the replicas and the rank; the
// defaults are timm's. DeiT's own RASampler gives the same lists for n >= 256 (below, it selects
// none).
struct RepeatedAugmentOptions {
  int num_repeats = 3;           // integer repeats (timm also resamples for fractional ones)
  int64_t selected_round = 256;  // 0: no rounding
  double selected_ratio = 0;     // 0: the number of replicas
  bool shuffle = true;           // false: indices in order
};

// Per-rank epoch length (len(sampler)): with m = ceil(n * num_repeats / world),
//   min(m, n >= selected_round > 0 ? floor((n / selected_round * selected_round) / ratio)
//                                  : ceil(n / ratio)),   ratio = selected_ratio or world.
int64_t repeated_augment_length(int64_t n, const RepeatedAugmentOptions& opt, int world);

// The indices rank `rank` of `world` visits in `epoch` (what timm yields after set_epoch(epoch)):
// p = torch_randperm(n, seed + epoch) (or 0 .. n-1 without shuffle), L = p with each entry
// repeated num_repeats times in a row, and entry j of the result is L[(rank + j world) % |L|] for
// j < repeated_augment_length. timm seeds with the epoch alone: seed 0 reproduces it exactly (the
// generator keeps the low 32 bits of seed + epoch, as torch's manual_seed does).
std::vector<int64_t> repeated_augment_indices(int64_t n, int64_t epoch, uint64_t seed,
                                              const RepeatedAugmentOptions& opt, int rank,
                                              int world);

}  // namespace mokd::data
