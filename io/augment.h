// The augmentation primitives on HWC uint8 images that the sample transform (io/transform.h)
// composes: crop with padding, flip, the bilinear resize of a box, and the options struct of the
// geometric steps; normalisation to f32 and batch-level mixup/cutmix with soft targets; the
// reproducible random stream they all draw from (every random choice comes from an explicit Rng).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/image_batch.h"
#include "engine/rng.h"

namespace mokd::data {

// A sequential reader of Philox words under one key: word i of the draw is philox_word(key, i).
class Rng {
 public:
  explicit Rng(RngKey key) : key_(key) {}
  uint32_t u32() { return philox_word(key_, i_++); }
  uint64_t u64() {
    uint64_t hi = u32();
    return (hi << 32) | u32();
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(u64() >> 11) * (1.0 / 9007199254740992.0); }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }
  // Integer in [lo, hi) (hi > lo); 64-bit multiply-shift, bias below 2^-32 for n < 2^32.
  int64_t randint(int64_t lo, int64_t hi);
  double normal();                  // Box-Muller
  double gamma(double alpha);       // Marsaglia-Tsang, alpha > 0
  double beta(double a, double b);  // two Gamma draws
  uint64_t position() const { return i_; }

 private:
  RngKey key_;
  uint64_t i_ = 0;
};

// Keys for the data stream: each (seed, epoch, purpose, index) gets its own range of 2^12 words, so
// a sample's randomness does not depend on how many samples were processed before it.
enum class DataPurpose : uint64_t { Order = 0, Sample = 1, Batch = 2, Erase = 3 };
RngKey data_key(uint64_t seed, int64_t epoch, DataPurpose purpose, int64_t index);

// The epoch's sample order: a Fisher-Yates permutation of [0, n) from data_key(seed, epoch, Order,
// 0).
std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n);

// ---- per-image transforms (HWC uint8, c channels) ----

// dst (h x w) = the window at (top, left) of src zero-padded by `pad` on every side; top, left in
// [0, 2 pad]. dst must not alias src.
void crop_with_padding(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t pad,
                       int64_t top, int64_t left, uint8_t* dst);
void random_crop_with_padding(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t pad,
                              Rng& rng, uint8_t* dst);
// Mirrors columns in place.
void hflip_inplace(uint8_t* img, int64_t h, int64_t w, int64_t c);

struct Box {
  int64_t top = 0, left = 0, height = 0, width = 0;
};
// The RandomResizedCrop box: sample_resized_crop in io/random_resized_crop.h.
// src's box cropped, then resized to out_h x out_w with PIL's antialiased bilinear filter, byte for
// byte (what torchvision's RandomResizedCrop does on a PIL image): io/resample.h's resize with
// Interpolation::Bilinear.
void resize_bilinear(const uint8_t* src, int64_t h, int64_t w, int64_t c, const Box& box,
                     int64_t out_h, int64_t out_w, uint8_t* dst);

// The geometric augmentations of the train transform (io/transform.h applies them in this order).
struct AugmentOptions {
  bool random_resized_crop = false;  // first, if on
  double scale_min = 0.08, scale_max = 1.0;
  double ratio_min = 3.0 / 4.0, ratio_max = 4.0 / 3.0;
  int64_t crop_padding = -1;  // >= 0: random crop with this zero padding (after RRC, if any)
  bool hflip = false;         // horizontal flip with p = 0.5, last
};

// (x / 255 - mean[c]) / std[c] into f32; empty mean/std mean 0 and 1.
struct Normalize {
  std::vector<float> mean, std;
};
// Per-channel lookup table (256 entries per channel) of the normalised values.
std::vector<float> normalize_table(const Normalize& norm, int64_t channels);
void normalize(const uint8_t* src, int64_t pixels, int64_t c, const std::vector<float>& table,
               float* dst);

// ---- batch level: timm's Mixup in "batch" mode ----
struct MixupOptions {
  double mixup_alpha = 0;      // > 0 enables mixup
  double cutmix_alpha = 0;     // > 0 enables cutmix
  double prob = 1.0;           // probability of mixing a batch at all
  double switch_prob = 0.5;    // with both on: probability of cutmix
  double label_smoothing = 0;  // folded into the soft targets
  bool correct_lam = true;     // cutmix: lambda = 1 - box area / image area
  bool soft_targets() const { return mixup_alpha > 0 || cutmix_alpha > 0 || label_smoothing > 0; }
};

struct MixupResult {
  double lam = 1.0;     // weight of the un-flipped batch (after the cutmix correction)
  bool mixed = false;   // the images change: the drawn lam was below 1
  bool cutmix = false;  // cutmix rather than mixup
  Box box;              // the cutmix box (when cutmix)
};

// The batch's mix as timm's Mixup draws it (whether to mix, which mode, lam, the cutmix box and
// its area correction), touching no image.
MixupResult sample_mixup(const MixupOptions& opt, int64_t h, int64_t w, Rng& rng);
// Applies a drawn mix to f32 NHWC images in place: x = lam x + (1 - lam) flip(x) in f32 as timm's
// in-place mul_ / add_, or the cutmix box of flip(x) pasted into x.
void apply_mixup(const MixupResult& mix, float* images, int64_t n, int64_t h, int64_t w, int64_t c);
// The same mix as data for the batch preparation on the training device (engine/image_batch.h).
MixSpec mix_spec(const MixupResult& mix);

// sample_mixup, apply_mixup, then the soft targets: mixes images (f32 NHWC, n x h x w x c, in
// place) with the batch flipped along n, and writes the soft targets [n, num_classes]: lam *
// onehot_s(y) + (1 - lam) * onehot_s(flip(y)), onehot_s with off = s / C and on = 1 - s + off.
MixupResult mixup_batch(const MixupOptions& opt, float* images, int64_t n, int64_t h, int64_t w,
                        int64_t c, const int64_t* labels, int64_t num_classes, Rng& rng,
                        float* soft_targets);
// Soft targets for given lam (no image change); exposed for tests.
void mixup_targets(const int64_t* labels, int64_t n, int64_t num_classes, double lam,
                   double smoothing, float* soft_targets);

}  // namespace mokd::data
