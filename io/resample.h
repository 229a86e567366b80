// Image resizing that reproduces Pillow's Image.resize bit for bit on 8-bit images (modes "L" and
// "RGB"; any channel count is resampled the same way, channel by channel) for NEAREST, BILINEAR
// and BICUBIC (a = -0.5).
//
// Bilinear and bicubic follow Pillow's two separable passes: the filter is widened by the scale
// when shrinking (antialiasing), coefficients are normalised in double, then turned into 22-bit
// fixed point; each pass accumulates in int32 from a rounding half and clips to uint8. The
// horizontal pass runs first, over only the rows the vertical pass reads, except when the height
// shrinks and 2 out_w - out_h > 2 w - h: then the vertical pass runs first (Pillow 13.0's order;
// the order changes the bytes, since each pass rounds). A pass whose axis is unchanged is skipped.
// Nearest is Pillow's scaled lookup at the pixel centres.
//
// Two ways of taking a region, which differ at its edges:
// - resize(src, Box, ...): src cropped to the box, then resized. This is what torchvision's
//   F.resized_crop does on a PIL image (F.crop, i.e. img.crop(box), then img.resize(size)), so
//   RandomResizedCrop and timm's RandomResizedCropAndInterpolation; the filter sees only the box.
// - resize_box(src, left, top, right, bottom, ...): Pillow's img.resize(size, box=...), whose
//   filter also reads the pixels around the box (up to its support beyond each edge). For the
//   same integer box the two differ on the edge pixels (bilinear/bicubic; nearest agrees), so the
//   crop form is the one for RandomResizedCrop.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/augment.h"  // Box
#include "io/image.h"

namespace mokd::data {

enum class Interpolation { Nearest, Bilinear, Bicubic };

// "nearest", "bilinear", "bicubic" -> the enum; anything else throws naming `key` (the config key
// or argument being parsed) and the accepted names.
Interpolation parse_interpolation(const std::string& name, const std::string& key);
const char* interpolation_name(Interpolation interp);

// Buffers a resize reuses between calls: coefficient tables and the intermediate image. Calls
// without one use a thread_local instance, so steady-state resizing allocates nothing.
struct ResampleScratch {
  std::vector<double> weights;            // one axis' coefficients before fixed point
  std::vector<int32_t> coeff_x, coeff_y;  // fixed-point coefficients, ksize per output pixel
  std::vector<int32_t> first_x, first_y;  // first input pixel of each output pixel's taps
  std::vector<int32_t> count_x, count_y;  // number of taps
  std::vector<int32_t> acc;               // vertical pass accumulators (one output row)
  std::vector<uint8_t> mid;               // the first pass's output
  std::vector<uint8_t> block;             // a few rows, transposed for the horizontal pass
};

// dst (out_h x out_w, src's channels) = src cropped to `box` (top, left, height, width; inside
// src, non-empty), then resized: PIL's
//   img.crop((left, top, left + width, top + height)).resize((out_w, out_h), resample).
// dst must not be src; its buffer is reused.
void resize(const Image& src, const Box& box, int64_t out_h, int64_t out_w, Interpolation interp,
            Image& dst, ResampleScratch* scratch = nullptr);
// The whole image: PIL's img.resize((out_w, out_h), resample).
void resize(const Image& src, int64_t out_h, int64_t out_w, Interpolation interp, Image& dst,
            ResampleScratch* scratch = nullptr);
// The same on raw HWC buffers (h x w x c in, out_h x out_w x c out, not overlapping).
void resize(const uint8_t* src, int64_t h, int64_t w, int64_t c, const Box& box, int64_t out_h,
            int64_t out_w, Interpolation interp, uint8_t* dst, ResampleScratch* scratch = nullptr);

// dst = PIL's img.resize((out_w, out_h), resample, box=(left, top, right, bottom)): the box in
// pixel-edge coordinates, fractional allowed, rounded to single precision as Pillow stores it,
// and it must satisfy 0 <= left < right <= width, 0 <= top < bottom <= height.
void resize_box(const Image& src, double left, double top, double right, double bottom,
                int64_t out_h, int64_t out_w, Interpolation interp, Image& dst,
                ResampleScratch* scratch = nullptr);

}  // namespace mokd::data
