// The crop box of timm's RandomResizedCropAndInterpolation (DeiT's training crop): a box of a
// random area fraction and log-uniform aspect ratio at a uniform position, else a centred crop.
// Only the box is chosen here; resampling it to the output size is the resizer's job.
#pragma once
#include <cstdint>

#include "io/augment.h"

namespace mokd::data {

// timm's get_params for an h x w image (area A = h w):
//   up to 10 attempts, each drawing, in this order,
//     s     = rng.uniform(scale_min, scale_max)             target area s * A
//     r     = exp(rng.uniform(log ratio_min, log ratio_max)) aspect ratio w / h
//     cw    = round(sqrt(s A r)), ch = round(sqrt(s A / r))  (half to even, as Python's round)
//   and, if 0 < cw <= w and 0 < ch <= h,
//     top   = rng.randint(0, h - ch + 1), left = rng.randint(0, w - cw + 1)
//   and returning {top, left, ch, cw}. When no attempt fits: the centred crop of the whole image
//   clamped to the ratio range (w / h < ratio_min: width w, height round(w / ratio_min); above
//   ratio_max: height h, width round(h * ratio_max)), at ((h - ch) / 2, (w - cw) / 2), no draws.
// The departures from timm, both for degenerate sizes only: timm accepts an attempt with a zero
// side (reachable when s A min(r, 1/r) < 1/4: images of under 5 pixels at the defaults), which no
// resize can use, and here it fails like one that does not fit; the centred crop's sides are at
// least 1.
// Requires h, w >= 1, 0 <= scale_min <= scale_max, 0 < ratio_min <= ratio_max. `fell_back`, when
// given, is set to whether the centred crop was returned.
Box sample_resized_crop(int64_t h, int64_t w, double scale_min, double scale_max, double ratio_min,
                        double ratio_max, Rng& rng, bool* fell_back = nullptr);

}  // namespace mokd::data
