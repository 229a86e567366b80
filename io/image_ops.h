// Pillow's per-image primitives on an RGB Image, bit for bit as Pillow 13 computes them:
// ImageOps (autocontrast, equalize, invert, posterize, solarize), a threshold-add lookup table,
// ImageEnhance (Color, Contrast, Brightness, Sharpness: Image.blend of the image with a degenerate
// one) and Image.transform(AFFINE) / Image.rotate with a fill colour and bilinear or bicubic
// resampling. RandAugment and colour jitter (io/randaugment.h) are built from them; matching
// Pillow's arithmetic (its float types, operation order and truncations) is what lets them equal
// the Python pipelines they reproduce.
//
// Every function needs a 3-channel image (grayscale is refused with an error naming the op).
#pragma once
#include <array>
#include <cstdint>

#include "io/image.h"
#include "io/resample.h"  // Interpolation

namespace mokd::data {

using Rgb = std::array<uint8_t, 3>;

// ---- lookup-table ops (ImageOps, in place) ----

// Same 256-entry table for every channel.
void apply_lut(Image& img, const uint8_t lut[256]);
// Per channel: the histogram's lowest and highest used levels are stretched to 0 and 255 (a
// channel with one level is left as is). ImageOps.autocontrast(img) with no cutoff.
void autocontrast(Image& img);
// Per channel: Pillow's histogram equalisation (ImageOps.equalize).
void equalize(Image& img);
void invert(Image& img);
// Keeps the `bits` high bits (ImageOps.posterize). bits >= 8 is the identity; bits <= 0 gives
// black: the mask keeps no bit, which is what Pillow returned before it began to refuse bits < 1.
void posterize(Image& img, int64_t bits);
// Levels >= threshold become 255 - level (ImageOps.solarize).
void solarize(Image& img, int64_t threshold);
// Levels < threshold become min(255, level + add).
void solarize_add(Image& img, int64_t add, int64_t threshold = 128);

// ---- ImageEnhance (in place): Image.blend(degenerate, img, factor) ----
// Pillow blends in float: out = degenerate + (float)factor * (img - degenerate), truncated,
// clipped to [0, 255] when factor is outside [0, 1].

// degenerate: the image's luma (ITU-R 601, Pillow's fixed point) in every channel.
void enhance_color(Image& img, double factor);
// degenerate: a flat image at the mean luma, rounded.
void enhance_contrast(Image& img, double factor);
// degenerate: black.
void enhance_brightness(Image& img, double factor);
// degenerate: ImageFilter.SMOOTH (3x3, weights 1 and centre 5, over 13) with the border pixels
// kept; images smaller than 3x3 are unchanged.
void enhance_sharpness(Image& img, double factor);

// ---- geometry ----

// dst = src.transform(src.size, AFFINE, a, resample, fillcolor=fill): the output pixel centred at
// (x + 0.5, y + 0.5) samples src at (a0 x' + a1 y' + a2, a3 x' + a4 y' + a5); positions outside
// [0, w) x [0, h) keep the fill colour, inside the filter's taps are clamped to the image. dst is
// resized to src's shape and must not alias it. Reads src through a per-thread copy of 16 bytes
// per pixel (kept for the next call).
void affine_transform(const Image& src, const std::array<double, 6>& a, Interpolation resample,
                      const Rgb& fill, Image& dst);
// dst = src.rotate(degrees, resample, fillcolor=fill): counter-clockwise about the centre, same
// size; 0, 180 (and 90, 270 on square images) are Pillow's exact transposes, other angles its
// affine matrix with the coefficients rounded to 15 decimals. dst must not alias src.
void rotate(const Image& src, double degrees, Interpolation resample, const Rgb& fill, Image& dst);

}  // namespace mokd::data
