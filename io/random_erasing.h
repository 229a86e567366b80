// timm's RandomErasing (Zhong et al., "Random Erasing Data Augmentation"), as DeiT's recipe uses
// it: on a normalised f32 HWC image, with some probability, up to a few boxes of random area and
// log-uniform aspect ratio are overwritten with zeros, one normal colour, or per-pixel normal
// noise. Every choice comes from one Rng, in the order documented below.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/image_batch.h"
#include "io/augment.h"

namespace mokd::data {

enum class EraseMode {
  Const,  // zeros ('const')
  Rand,   // one standard normal value per channel and box ('rand')
  Pixel,  // a standard normal value per pixel and channel ('pixel')
};
// timm's mode names, case-insensitive: "const" (or ""), "rand", "pixel".
EraseMode parse_erase_mode(const std::string& name);

// timm's constructor arguments. The defaults are DeiT's recipe (--reprob 0.25 --remode pixel
// --recount 1); timm's class itself defaults to probability 0.5 and mode 'const'.
struct RandomErasingOptions {
  double probability = 0.25;
  EraseMode mode = EraseMode::Pixel;
  double min_area = 0.02;     // of the image's area, per box before dividing by the count
  double max_area = 1.0 / 3;  //
  double min_aspect = 0.3;    // box height / width
  double max_aspect = 0;      // 0: 1 / min_aspect (timm's None)
  int min_count = 1;          // boxes per erased image, uniform in [min_count, max_count]
  int max_count = 0;          // 0: min_count (timm's None); at most 32
  int num_splits = 0;         // batch form only: > 1 leaves the first n / num_splits samples clean
};

// The boxes of one image (h x w), drawing exactly what timm's _erase draws from Python's random:
//   u = rng.uniform(); if u > probability: no box (one draw);
//   count = min_count == max_count ? min_count : rng.randint(min_count, max_count + 1);
//   per box, up to 10 attempts of
//     target = rng.uniform(min_area, max_area) * (h w) / count,
//     r      = exp(rng.uniform(log min_aspect, log max_aspect)),
//     bh     = round(sqrt(target r)), bw = round(sqrt(target / r))   (half to even)
//   and, if bw < w and bh < h: top = rng.randint(0, h - bh + 1), left = rng.randint(0, w - bw + 1),
//   the box is kept and the next box starts; after 10 misses the box is skipped.
// A box may have a zero side (then it erases nothing), as in timm.
std::vector<Box> sample_erasing_boxes(const RandomErasingOptions& opt, int64_t h, int64_t w,
                                      Rng& rng);

// Erases one normalised image (f32 HWC, h x w x c) in place and returns its boxes: first
// sample_erasing_boxes(opt, h, w, rng), then each box in turn is filled:
//   Pixel: one rng.u64() keys a child Rng(RngKey{that word, 0}) that gives every value of the box
//          in HWC order, row by row, as Box-Muller pairs (two uniform() draws give the cosine
//          and the sine value; a row of odd length drops its last sine) (a sample's own stream
//          is 2^12 words, see data_key, and a box takes up to 2 words per value);
//   Rand:  c rng.normal() values, one per channel;
//   Const: zeros, no draws.
// Later boxes overwrite earlier ones where they overlap.
std::vector<Box> random_erasing(const RandomErasingOptions& opt, float* hwc, int64_t h, int64_t w,
                                int64_t c, Rng& rng);

// The erasing of one image as data for the batch preparation (engine/image_batch.h): the same
// draws, in the same order, as random_erasing() (the boxes, then per box the noise key or the
// colour), so that prepare_images gives random_erasing()'s values. Boxes are for sample `sample`;
// the Rand mode takes at most kEraseMaxChannels channels.
std::vector<EraseBox> plan_random_erasing(const RandomErasingOptions& opt, int64_t h, int64_t w,
                                          int64_t c, int32_t sample, Rng& rng);

// timm's batch form (n x h x w x c, NHWC): random_erasing on each sample from
// num_splits > 1 ? n / num_splits : 0 on, in order, all from the one rng.
void random_erasing_batch(const RandomErasingOptions& opt, float* nhwc, int64_t n, int64_t h,
                          int64_t w, int64_t c, Rng& rng);

}  // namespace mokd::data
