// The last step of the input pipeline, on the training device: a batch of uint8 images (NHWC, as
// the loader builds them) becomes the f32 the model reads, through normalisation (a per-channel
// lookup table), random erasing (boxes filled with a colour or with per-pixel normal noise) and
// mixup or cutmix with the batch flipped along N: DeiT's order. The loader (io/loader.h) draws
// every random choice on the host and hands them over as the plain data below, so the copy to the
// device is uint8 (a quarter of the f32 bytes) and the CPU and CUDA backends compute the same
// values from the same inputs. Shared by host and device code (no Tensor here).
#pragma once
#include <cmath>
#include <cstdint>

#include "engine/bf16.h"  // MOKD_HD
#include "engine/kernel_types.h"
#include "engine/rng.h"

namespace mokd {

constexpr int kEraseMaxChannels = 4;

// One erased box of one sample: rows [top, top + height) x columns [left, left + width), filled
// after normalisation. A sample's boxes are applied in order (a later box wins where they overlap).
struct EraseBox {
  int32_t sample = 0, top = 0, left = 0, height = 0, width = 0;
  int32_t pixel_noise = 0;               // 1: erase_noise(noise_key, ...); 0: colour
  uint64_t noise_key = 0;                // pixel noise: RngKey{noise_key, 0}
  float colour[kEraseMaxChannels] = {};  // colour fill, one value per channel
};

enum class MixMode : int32_t {
  None = 0,
  Blend = 1,  // mixup: x * lam + flip(x) * lam1, two f32 products and an f32 sum (no fused
              // multiply-add)
  Cut = 2,    // cutmix: the box of flip(x) replaces that of x
};

// The batch-level mix; flip(x)[i] is sample n - 1 - i.
struct MixSpec {
  MixMode mode = MixMode::None;
  float lam = 1.f, lam1 = 0.f;                       // Blend
  int32_t top = 0, left = 0, height = 0, width = 0;  // Cut
};

struct ImageBatchParams {
  // Host memory; boxes grouped by sample in increasing sample order.
  const EraseBox* boxes = nullptr;
  int64_t num_boxes = 0;
  MixSpec mix;
};

// Value k (HWC order inside the box's row ry; k in [0, row_len), row_len = box width * channels)
// of a pixel-noise box: the values of the box, row by row, are Box-Muller pairs from
// RngKey{key, 0}, the cosine value then the sine value, each pair from two 53-bit uniforms of two
// words each (a row of odd length drops its last sine). Pair p is therefore Philox block p:
//   u1 = (w0 << 32 | w1) 2^-53, u2 = (w2 << 32 | w3) 2^-53,
//   r = sqrt(-2 log(1 - u1)), a = 2 pi u2, values r cos a, r sin a (double, rounded to f32).
// io/random_erasing.h draws the same values sequentially.
MOKD_HD float erase_noise(uint64_t key, int64_t row_len, int64_t ry, int64_t k) {
  const uint64_t pair = static_cast<uint64_t>(ry * ((row_len + 1) / 2) + k / 2);
  const Philox4 w = philox4x32(static_cast<uint32_t>(pair), static_cast<uint32_t>(pair >> 32), 0, 0,
                               static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
  const double scale = 1.0 / 9007199254740992.0;  // 2^-53
  const double u1 =
      static_cast<double>(((static_cast<uint64_t>(w.v[0]) << 32) | w.v[1]) >> 11) * scale;
  const double u2 =
      static_cast<double>(((static_cast<uint64_t>(w.v[2]) << 32) | w.v[3]) >> 11) * scale;
  const double r = ::sqrt(-2.0 * ::log(1.0 - u1));  // :: as mokd has Tensor log, sqrt
  const double a = (2.0 * 3.14159265358979323846) * u2;
  return static_cast<float>((k % 2 == 0) ? r * ::cos(a) : r * ::sin(a));
}

// Sample i's value at (y, x, ch) before mixing: table[ch * 256 + pixel], then its boxes
// boxes[first, last) in order.
MOKD_HD float erased_value(const uint8_t* pixels, const float* table, const EraseBox* boxes,
                           int64_t first, int64_t last, int64_t h, int64_t w, int64_t c, int64_t i,
                           int64_t y, int64_t x, int64_t ch) {
  float v = table[ch * 256 + pixels[((i * h + y) * w + x) * c + ch]];
  for (int64_t b = first; b < last; ++b) {
    const EraseBox& e = boxes[b];
    if (y < e.top || y >= e.top + e.height || x < e.left || x >= e.left + e.width) continue;
    v = e.pixel_noise ? erase_noise(e.noise_key, e.width * c, y - e.top, (x - e.left) * c + ch)
                      : e.colour[ch];
  }
  return v;
}

}  // namespace mokd
