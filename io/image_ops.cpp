// Pillow 13's per-image arithmetic (libImaging Blend.c, Filter.c, Geometry.c, Convert.c and the
// ImageOps / ImageEnhance / Image.rotate Python code), re-derived on mokd's Image. Pillow mixes
// float (blend, the 3x3 filter) and double (affine sampling) arithmetic and truncates rather than
// rounds; the code below keeps each operation, its type and its order (lookup tables where the
// result depends on one level only; loops written to vectorise otherwise). This file is compiled
// with -ffp-contract=off (CMakeLists.txt): a fused multiply-add would round differently.
#include "io/image_ops.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/error.h"

namespace mokd::data {

namespace {

void check_rgb(const Image& img, const char* op) {
  MOKD_CHECK(img.channels == 3 && img.height >= 0 && img.width >= 0 &&
                 img.pixels.size() == static_cast<size_t>(img.height * img.width * 3),
             op, ": expected an RGB image (3 channels, height x width x 3 bytes), got ", img.height,
             "x", img.width, "x", img.channels, " with ", img.pixels.size(), " bytes");
}

void apply_luts(Image& img, const uint8_t lut[3][256]) {
  uint8_t* p = img.data();
  const size_t n = static_cast<size_t>(img.height * img.width);
  for (size_t i = 0; i < n; ++i, p += 3) {
    p[0] = lut[0][p[0]];
    p[1] = lut[1][p[1]];
    p[2] = lut[2][p[2]];
  }
}

void histograms(const Image& img, int64_t hist[3][256]) {
  std::memset(hist, 0, sizeof(int64_t) * 3 * 256);
  const uint8_t* p = img.data();
  const size_t n = static_cast<size_t>(img.height * img.width);
  for (size_t i = 0; i < n; ++i, p += 3) {
    ++hist[0][p[0]];
    ++hist[1][p[1]];
    ++hist[2][p[2]];
  }
}

uint8_t clip8(int64_t v) { return static_cast<uint8_t>(std::clamp<int64_t>(v, 0, 255)); }

// Convert.c's RGB -> L: ITU-R 601 luma in 16.16 fixed point, rounded.
inline int luma(const uint8_t* p) {
  return (p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16;
}

// Blend.c: out = in1 + alpha * (in2 - in1) in float (alpha is the factor converted to float),
// truncated to uint8; the extrapolating branch (alpha outside [0, 1]) clips first, and in the
// interpolating one the value cannot leave [0, 255], so one clipped truncation serves both. Written
// branch-free so that loops over a row vectorise.
inline uint8_t blend(float alpha, int in1, int in2) {
  float t = static_cast<float>(in1) + alpha * static_cast<float>(in2 - in1);
  t = t < 0.f ? 0.f : (t > 255.f ? 255.f : t);
  return static_cast<uint8_t>(static_cast<int>(t));
}

// Blend against a constant degenerate level: one table for every channel.
void blend_constant(Image& img, int level, double factor) {
  const float alpha = static_cast<float>(factor);
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = blend(alpha, level, v);
  apply_lut(img, lut);
}

// Python's float % (the result takes the divisor's sign), as Image.rotate reduces its angle.
double py_mod(double x, double m) {
  double r = std::fmod(x, m);
  if (r != 0) {
    if ((m < 0) != (r < 0)) r += m;
  } else {
    r = std::copysign(0.0, m);
  }
  return r;
}

// Python's round(x, 15): the correctly rounded 15-decimal string read back (glibc's printf and
// strtod are exact, as CPython's dtoa is).
double round15(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.15f", x);
  return std::strtod(buf, nullptr);
}

// ---- affine sampling ----
// Pixels are read as RGBx vectors: each vector operation below is, lane by lane, exactly the
// scalar operation Pillow does per band (GCC/Clang vector extensions; no fused multiply-add).
typedef int32_t v4i __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));

// src as RGBx pixels of int32 lanes (one instruction to convert to double), in a per-thread
// buffer reused between calls.
const v4i* rgbx_pixels(const Image& src) {
  thread_local std::vector<v4i> buf;
  const size_t n = static_cast<size_t>(src.height * src.width);
  buf.resize(n);
  const uint8_t* p = src.data();
  for (size_t i = 0; i < n; ++i, p += 3) buf[i] = v4i{p[0], p[1], p[2], 0};
  return buf.data();
}

inline v4d tap(const v4i* row, int64_t x) { return __builtin_convertvector(row[x], v4d); }

// Geometry.c's BICUBIC macro (a = -1). On integer taps Pillow forms the coefficients in int; here
// they are formed in double from integer values, which is exact, so the results are the same.
inline v4d cubic(v4d v1, v4d v2, v4d v3, v4d v4, double d) {
  const v4d p2 = -v1 + v3, p3 = 2 * (v1 - v2) + v3 - v4, p4 = -v1 + v2 - v3 + v4;
  return v2 + d * (p2 + d * (p3 + d * p4));
}

// The first three lanes (each in [0, 255]) as bytes.
inline void store3(v4i v, uint8_t* out) {
  out[0] = static_cast<uint8_t>(v[0]);
  out[1] = static_cast<uint8_t>(v[1]);
  out[2] = static_cast<uint8_t>(v[2]);
}

inline int64_t clampi(int64_t v, int64_t hi) { return v < 0 ? 0 : (v > hi ? hi : v); }

struct Taps {
  int64_t x, y;   // the first tap
  double dx, dy;  // fractions
};
// Geometry.c's FLOOR of the position minus the half-pixel, and the fractions.
inline Taps taps_at(double xs, double ys) {
  const double fx = xs - 0.5, fy = ys - 0.5;
  const double flx = std::floor(fx), fly = std::floor(fy);
  return {static_cast<int64_t>(flx), static_cast<int64_t>(fly), fx - flx, fy - fly};
}

// bicubic_filter32RGB at a position inside the image. Taps outside it repeat the edge (Pillow
// clamps columns and reuses the previous row's value, which is the same). With a zero fraction
// the cubic is exactly its second tap: those rows and columns are not evaluated.
void sample_bicubic(const v4i* px, int64_t w, int64_t h, double xs, double ys, uint8_t* out) {
  const Taps t = taps_at(xs, ys);
  const int64_t x = t.x - 1, y = t.y - 1, wm = w - 1, hm = h - 1;
  const int64_t c0 = clampi(x, wm), c1 = clampi(x + 1, wm), c2 = clampi(x + 2, wm),
                c3 = clampi(x + 3, wm);
  auto row = [&](int64_t k) {
    const v4i* r = px + clampi(y + k, hm) * w;
    return t.dx == 0 ? tap(r, c1) : cubic(tap(r, c0), tap(r, c1), tap(r, c2), tap(r, c3), t.dx);
  };
  const v4d s = t.dy == 0 ? row(1) : cubic(row(0), row(1), row(2), row(3), t.dy);
  // Pillow: <= 0 gives 0, >= 255 gives 255, else truncation; the same as truncating the clamp.
  const v4d zero = {0, 0, 0, 0}, top = {255, 255, 255, 255};
  const v4d c = s < zero ? zero : (s > top ? top : s);
  store3(__builtin_convertvector(c, v4i), out);
}

// bilinear_filter32RGB: v = a + (b - a) d along x, then along y; truncated (it cannot leave
// [0, 255]).
void sample_bilinear(const v4i* px, int64_t w, int64_t h, double xs, double ys, uint8_t* out) {
  const Taps t = taps_at(xs, ys);
  const int64_t wm = w - 1, hm = h - 1;
  const int64_t c0 = clampi(t.x, wm), c1 = clampi(t.x + 1, wm);
  const v4i* r0 = px + clampi(t.y, hm) * w;
  const v4i* r1 = px + clampi(t.y + 1, hm) * w;
  const v4d a0 = tap(r0, c0), a1 = tap(r1, c0);
  const v4d v1 = a0 + (tap(r0, c1) - a0) * t.dx;
  const v4d v2 = a1 + (tap(r1, c1) - a1) * t.dx;
  store3(__builtin_convertvector(v1 + (v2 - v1) * t.dy, v4i), out);
}

// Transpose.ROTATE_90 / ROTATE_180 / ROTATE_270 (counter-clockwise) of a square image, or 180 of
// any.
void transpose(const Image& src, int quarter_turns, Image& dst) {
  const int64_t h = src.height, w = src.width;
  dst.reset(quarter_turns == 2 ? h : w, quarter_turns == 2 ? w : h, 3);
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* in = src.row(y);
    for (int64_t x = 0; x < w; ++x) {
      uint8_t* o;
      if (quarter_turns == 1) {
        o = dst.row(w - 1 - x) + y * 3;
      } else if (quarter_turns == 2) {
        o = dst.row(h - 1 - y) + (w - 1 - x) * 3;
      } else {
        o = dst.row(x) + (h - 1 - y) * 3;
      }
      std::memcpy(o, in + x * 3, 3);
    }
  }
}

}  // namespace

// ---- lookup-table ops ----

void apply_lut(Image& img, const uint8_t lut[256]) {
  check_rgb(img, "apply_lut");
  uint8_t* p = img.data();
  for (size_t i = 0, n = img.pixels.size(); i < n; ++i) p[i] = lut[p[i]];
}

void autocontrast(Image& img) {
  check_rgb(img, "autocontrast");
  int64_t hist[3][256];
  histograms(img, hist);
  uint8_t lut[3][256];
  for (int c = 0; c < 3; ++c) {
    int lo = 0, hi = 255;
    while (lo < 255 && hist[c][lo] == 0) ++lo;
    while (hi > 0 && hist[c][hi] == 0) --hi;
    if (hi <= lo) {
      for (int v = 0; v < 256; ++v) lut[c][v] = static_cast<uint8_t>(v);
      continue;
    }
    const double scale = 255.0 / (hi - lo), offset = -lo * scale;
    for (int v = 0; v < 256; ++v) {
      // Python's int(): truncation toward zero, then the clamp.
      lut[c][v] = clip8(static_cast<int64_t>(v * scale + offset));
    }
  }
  apply_luts(img, lut);
}

void equalize(Image& img) {
  check_rgb(img, "equalize");
  int64_t hist[3][256];
  histograms(img, hist);
  uint8_t lut[3][256];
  for (int c = 0; c < 3; ++c) {
    int64_t total = 0, last = 0, used = 0;
    for (int v = 0; v < 256; ++v) {
      if (hist[c][v] == 0) continue;
      total += hist[c][v];
      last = hist[c][v];
      ++used;
    }
    const int64_t step = used <= 1 ? 0 : (total - last) / 255;
    if (step == 0) {
      for (int v = 0; v < 256; ++v) lut[c][v] = static_cast<uint8_t>(v);
      continue;
    }
    // Entries can reach 256; Image.point clips its table to uint8.
    int64_t n = step / 2;
    for (int v = 0; v < 256; ++v) {
      lut[c][v] = clip8(n / step);
      n += hist[c][v];
    }
  }
  apply_luts(img, lut);
}

void invert(Image& img) {
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(255 - v);
  check_rgb(img, "invert");
  apply_lut(img, lut);
}

void posterize(Image& img, int64_t bits) {
  check_rgb(img, "posterize");
  if (bits >= 8) return;
  const int mask = bits <= 0 ? 0 : (~((1 << (8 - bits)) - 1) & 0xff);
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(v & mask);
  apply_lut(img, lut);
}

void solarize(Image& img, int64_t threshold) {
  check_rgb(img, "solarize");
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = static_cast<uint8_t>(v < threshold ? v : 255 - v);
  apply_lut(img, lut);
}

void solarize_add(Image& img, int64_t add, int64_t threshold) {
  check_rgb(img, "solarize_add");
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = v < threshold ? clip8(v + add) : static_cast<uint8_t>(v);
  apply_lut(img, lut);
}

// ---- ImageEnhance ----

void enhance_color(Image& img, double factor) {
  check_rgb(img, "enhance_color");
  const float alpha = static_cast<float>(factor);
  const int64_t w = img.width, stride = w * 3;
  std::vector<int> luma_row(static_cast<size_t>(stride));  // the degenerate row, per byte
  int* __restrict l = luma_row.data();
  for (int64_t y = 0; y < img.height; ++y) {
    uint8_t* __restrict row = img.row(y);
    for (int64_t x = 0; x < w; ++x) l[3 * x] = l[3 * x + 1] = l[3 * x + 2] = luma(row + 3 * x);
    for (int64_t i = 0; i < stride; ++i) row[i] = blend(alpha, l[i], row[i]);
  }
}

void enhance_contrast(Image& img, double factor) {
  check_rgb(img, "enhance_contrast");
  // ImageStat's mean of the L image (exact integer sum over the count, in double), then
  // int(mean + 0.5).
  int64_t sum = 0;
  const uint8_t* p = img.data();
  const int64_t n = img.height * img.width;
  for (int64_t i = 0; i < n; ++i, p += 3) sum += luma(p);
  const double mean = n > 0 ? static_cast<double>(sum) / static_cast<double>(n) : 0.0;
  blend_constant(img, static_cast<int>(mean + 0.5), factor);
}

void enhance_brightness(Image& img, double factor) {
  check_rgb(img, "enhance_brightness");
  blend_constant(img, 0, factor);
}

void enhance_sharpness(Image& img, double factor) {
  check_rgb(img, "enhance_sharpness");
  const int64_t h = img.height, w = img.width;
  if (h < 3 || w < 3) return;  // ImagingFilter returns a copy: the blend is the identity
  // Filter.c: the kernel divided by its divisor in float, a float sum per row of taps in this
  // order (row below, row, row above), started at the rounding offset 0.5, clipped and truncated.
  const float k1 = 1.0f / 13.0f, k5 = 5.0f / 13.0f;
  const float alpha = static_cast<float>(factor);
  const int64_t stride = w * 3;
  // The filter reads the original rows above and at y while row y is rewritten in place.
  std::vector<uint8_t> above_row(img.row(0), img.row(0) + stride), here_row(stride);
  for (int64_t y = 1; y < h - 1; ++y) {
    uint8_t* __restrict row = img.row(y);
    std::memcpy(here_row.data(), row, static_cast<size_t>(stride));
    const uint8_t* __restrict dn = img.row(y + 1);
    const uint8_t* __restrict up = above_row.data();
    const uint8_t* __restrict mid = here_row.data();
    for (int64_t i = 3; i < stride - 3; ++i) {
      float ss = 0.5f;
      ss += (dn[i - 3] * k1 + dn[i] * k1) + dn[i + 3] * k1;
      ss += (mid[i - 3] * k1 + mid[i] * k5) + mid[i + 3] * k1;
      ss += (up[i - 3] * k1 + up[i] * k1) + up[i + 3] * k1;
      ss = ss < 0.f ? 0.f : (ss > 255.f ? 255.f : ss);
      row[i] = blend(alpha, static_cast<int>(ss), mid[i]);
    }
    above_row.swap(here_row);
  }
}

// ---- geometry ----

void affine_transform(const Image& src, const std::array<double, 6>& a, Interpolation resample,
                      const Rgb& fill, Image& dst) {
  check_rgb(src, "affine_transform");
  MOKD_CHECK(&src != &dst, "affine_transform: the output must not be the input image");
  MOKD_CHECK(resample != Interpolation::Nearest,
             "affine_transform: bilinear or bicubic sampling (RandAugment's), not nearest");
  const int64_t h = src.height, w = src.width;
  dst.reset(h, w, 3);
  const double wd = static_cast<double>(w), hd = static_cast<double>(h);
  const v4i* px = rgbx_pixels(src);
  for (int64_t y = 0; y < h; ++y) {
    uint8_t* out = dst.row(y);
    const double yin = static_cast<double>(y) + 0.5;
    for (int64_t x = 0; x < w; ++x, out += 3) {
      // Geometry.c's affine_transform, evaluated afresh at each pixel centre.
      const double xin = static_cast<double>(x) + 0.5;
      const double xs = a[0] * xin + a[1] * yin + a[2];
      const double ys = a[3] * xin + a[4] * yin + a[5];
      if (xs < 0.0 || xs >= wd || ys < 0.0 || ys >= hd) {
        out[0] = fill[0], out[1] = fill[1], out[2] = fill[2];
      } else if (resample == Interpolation::Bicubic) {
        sample_bicubic(px, w, h, xs, ys, out);
      } else {
        sample_bilinear(px, w, h, xs, ys, out);
      }
    }
  }
}

void rotate(const Image& src, double degrees, Interpolation resample, const Rgb& fill, Image& dst) {
  check_rgb(src, "rotate");
  MOKD_CHECK(&src != &dst, "rotate: the output must not be the input image");
  MOKD_CHECK(std::isfinite(degrees), "rotate: the angle must be finite, got ", degrees);
  const double angle = py_mod(degrees, 360.0);
  if (angle == 0) {
    dst = src;
    return;
  }
  if (angle == 180) return transpose(src, 2, dst);
  if ((angle == 90 || angle == 270) && src.width == src.height)
    return transpose(src, angle == 90 ? 1 : 3, dst);
  // Image.rotate's inverse matrix about the centre (w / 2, h / 2), written as Pillow writes it.
  const double rad = -(angle * (M_PI / 180.0));
  std::array<double, 6> m = {round15(std::cos(rad)),  round15(std::sin(rad)), 0.0,
                             round15(-std::sin(rad)), round15(std::cos(rad)), 0.0};
  const double cx = static_cast<double>(src.width) / 2.0,
               cy = static_cast<double>(src.height) / 2.0;
  const double tx = -cx - 0.0, ty = -cy - 0.0;
  const double m2 = m[0] * tx + m[1] * ty + m[2], m5 = m[3] * tx + m[4] * ty + m[5];
  m[2] = m2 + cx;
  m[5] = m5 + cy;
  affine_transform(src, m, resample, fill, dst);
}

}  // namespace mokd::data
