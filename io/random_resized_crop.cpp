// timm's RandomResizedCropAndInterpolation.get_params on mokd's Rng; see the header for the order
// of the draws.
#include "io/random_resized_crop.h"

#include <algorithm>
#include <cmath>

#include "engine/error.h"

namespace mokd::data {

namespace {
// Python's int(round(x)) for x >= 0: half to even, which nearbyint does in the default mode.
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }
}  // namespace

Box sample_resized_crop(int64_t h, int64_t w, double scale_min, double scale_max, double ratio_min,
                        double ratio_max, Rng& rng, bool* fell_back) {
  MOKD_CHECK(h >= 1 && w >= 1, "sample_resized_crop: image ", h, "x", w, " is empty");
  MOKD_CHECK(scale_min >= 0 && scale_min <= scale_max, "sample_resized_crop: scale (", scale_min,
             ", ", scale_max, ") must satisfy 0 <= min <= max");
  MOKD_CHECK(ratio_min > 0 && ratio_min <= ratio_max, "sample_resized_crop: ratio (", ratio_min,
             ", ", ratio_max, ") must satisfy 0 < min <= max");
  if (fell_back) *fell_back = false;
  // Python ints multiply exactly; h w < 2^53 here, so the double product is exact too.
  const double area = static_cast<double>(h * w);
  const double log_lo = std::log(ratio_min), log_hi = std::log(ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = rng.uniform(scale_min, scale_max) * area;
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int64_t cw = round_half_even(std::sqrt(target_area * aspect));
    const int64_t ch = round_half_even(std::sqrt(target_area / aspect));
    if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
      const int64_t top = rng.randint(0, h - ch + 1);
      const int64_t left = rng.randint(0, w - cw + 1);
      return Box{top, left, ch, cw};
    }
  }
  if (fell_back) *fell_back = true;
  const double in_ratio = static_cast<double>(w) / static_cast<double>(h);
  int64_t cw = w, ch = h;
  // The max(1, .) only matters for ratio ranges far from the image's (a side under half a pixel).
  if (in_ratio < ratio_min) {
    ch = std::max<int64_t>(1, round_half_even(static_cast<double>(w) / ratio_min));
  } else if (in_ratio > ratio_max) {
    cw = std::max<int64_t>(1, round_half_even(static_cast<double>(h) * ratio_max));
  }
  return Box{(h - ch) / 2, (w - cw) / 2, ch, cw};
}

}  // namespace mokd::data
