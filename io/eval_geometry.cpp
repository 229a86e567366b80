// timm's eval transform sizes: floor(img_size / crop_pct), torchvision's shorter-side Resize and
// CenterCrop window.
#include "io/eval_geometry.h"

#include <cmath>

#include "engine/error.h"

namespace mokd::data {

int64_t eval_scale_size(int64_t img_size, double crop_pct) {
  MOKD_CHECK(img_size >= 1, "eval transform: img_size ", img_size, " must be >= 1");
  MOKD_CHECK(crop_pct > 0 && std::isfinite(crop_pct), "eval transform: crop_pct ", crop_pct,
             " must be > 0");
  const double s = std::floor(static_cast<double>(img_size) / crop_pct);
  MOKD_CHECK(s >= 1 && s < 1e9, "eval transform: img_size ", img_size, " / crop_pct ", crop_pct,
             " gives a resize size of ", s, "; expected [1, 1e9)");
  return static_cast<int64_t>(s);
}

void resize_shorter_side(int64_t h, int64_t w, int64_t size, int64_t* out_h, int64_t* out_w) {
  MOKD_CHECK(h >= 1 && w >= 1, "resize: image ", h, "x", w, " is empty");
  MOKD_CHECK(size >= 1 && size < (int64_t(1) << 30), "resize: size ", size, " outside [1, 2^30)");
  MOKD_CHECK(h < (int64_t(1) << 30) && w < (int64_t(1) << 30), "resize: image ", h, "x", w,
             " sides must be below 2^30");
  const bool w_short = w <= h;
  const int64_t shorter = w_short ? w : h, longer = w_short ? h : w;
  // Python: int(size * long / short), the exact product's correctly rounded quotient, truncated.
  // For a product below 2^53 that rounding never reaches the next integer, so integer division
  // gives the same.
  MOKD_CHECK(size * longer < (int64_t(1) << 53), "resize: size ", size, " times side ", longer,
             " is beyond 2^53");
  const int64_t new_long = size * longer / shorter;
  *out_h = w_short ? new_long : size;
  *out_w = w_short ? size : new_long;
}

Box center_crop_box(int64_t h, int64_t w, int64_t crop_h, int64_t crop_w) {
  MOKD_CHECK(h >= 1 && w >= 1 && crop_h >= 1 && crop_w >= 1, "center crop: ", crop_h, "x", crop_w,
             " of a ", h, "x", w, " image; sizes must be >= 1");
  // After padding an axis, its size equals the crop and the offset is 0.
  auto offset = [](int64_t size, int64_t crop) -> int64_t {
    if (crop > size) return -((crop - size) / 2);
    return static_cast<int64_t>(std::nearbyint(static_cast<double>(size - crop) / 2.0));
  };
  return Box{offset(h, crop_h), offset(w, crop_w), crop_h, crop_w};
}

EvalGeometry eval_geometry(int64_t h, int64_t w, int64_t img_size, double crop_pct) {
  EvalGeometry g;
  resize_shorter_side(h, w, eval_scale_size(img_size, crop_pct), &g.resize_h, &g.resize_w);
  g.crop = center_crop_box(g.resize_h, g.resize_w, img_size, img_size);
  return g;
}

}  // namespace mokd::data
