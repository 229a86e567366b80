// The geometry of timm's evaluation transform (transforms_imagenet_eval, crop_mode 'center', a
// square img_size): torchvision Resize(floor(img_size / crop_pct)) on the shorter side, then
// CenterCrop(img_size). Pure size arithmetic; the pixels are resampled elsewhere.
#pragma once
#include <cstdint>

#include "io/augment.h"

namespace mokd::data {

// timm's scale_size = math.floor(img_size / crop_pct). Requires img_size >= 1, crop_pct > 0
// (timm replaces a crop_pct of None/0 by 0.875 before this).
int64_t eval_scale_size(int64_t img_size, double crop_pct);

// torchvision Resize(size) with one int (_compute_resized_output_size): the shorter side becomes
// `size`, the longer int(size * long / short) (truncated); w <= h counts w as the shorter.
// Equal to (h, w) means Resize returns the image unchanged.
void resize_shorter_side(int64_t h, int64_t w, int64_t size, int64_t* out_h, int64_t* out_w);

// torchvision CenterCrop((crop_h, crop_w)) of an h x w image as a window in its coordinates:
// {top, left, crop_h, crop_w}. Where the crop is larger than the image, torchvision pads with
// zeros ((crop - size) / 2 before, the rest after) and the window starts at minus that padding;
// otherwise top = round((h - crop_h) / 2) (half to even: 16.5 -> 16), likewise left. Pixels of the
// window outside the image are zero.
Box center_crop_box(int64_t h, int64_t w, int64_t crop_h, int64_t crop_w);

struct EvalGeometry {
  int64_t resize_h = 0, resize_w = 0;  // the Resize output (== input: no resize)
  Box crop;                            // CenterCrop's window in the resized image
};
// Both steps for an h x w image.
EvalGeometry eval_geometry(int64_t h, int64_t w, int64_t img_size, double crop_pct);

}  // namespace mokd::data
