// RandAugment as timm 1.0 applies it to a PIL RGB image (timm.data.auto_augment:
// rand_augment_transform and RandAugment / AugmentOp), and torchvision's ColorJitter as timm builds
// it when RandAugment is off. The ops are Pillow's (io/image_ops.h); the random choices come from
// an explicit Rng in the documented order below, so an image's augmentation is reproducible.
//
// Config strings follow timm's grammar: "rand" then '-'-separated tokens <key><value>:
//   m<int>    magnitude (default 10)         n<int>    layers per image (default 2)
//   p<float>  probability of applying a layer (default 0.5)
//   mstd<float>  std of the magnitude noise (default 0; > 100 means uniform in [0, m])
//   mmax<int> the magnitude's upper bound (default 10; 0 also means 10, as timm reads it)
//   inc<int>  nonzero: timm's "increasing" op list (_RAND_INCREASING_TRANSFORMS)
// DeiT uses "rand-m9-mstd0.5-inc1". Weighted or named op sets ('t...', the old 'w...') are
// refused, as are tokens timm would ignore or crash on (no value, unknown key, repeated key).
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "io/augment.h"  // Rng
#include "io/image.h"
#include "io/image_ops.h"

namespace mokd::data {

// timm's op names (_RAND_TRANSFORMS and _RAND_INCREASING_TRANSFORMS).
enum class RandOp : uint8_t {
  AutoContrast,
  Equalize,
  Invert,
  Rotate,
  Posterize,
  PosterizeIncreasing,
  Solarize,
  SolarizeIncreasing,
  SolarizeAdd,
  Color,
  ColorIncreasing,
  Contrast,
  ContrastIncreasing,
  Brightness,
  BrightnessIncreasing,
  Sharpness,
  SharpnessIncreasing,
  ShearX,
  ShearY,
  TranslateXRel,
  TranslateYRel,
};
const char* rand_op_name(RandOp op);
RandOp rand_op_from_name(const std::string& name);  // throws naming `name` if unknown
// Whether the op's level function flips the sign at random (timm's _randomly_negate): Rotate,
// Shear*, Translate*Rel and the *Increasing enhance ops.
bool rand_op_signed(RandOp op);
bool rand_op_geometric(RandOp op);  // Rotate, Shear*, Translate*: resampled, filled
// timm's op list, in its order: _RAND_INCREASING_TRANSFORMS when increasing, else _RAND_TRANSFORMS.
const std::vector<RandOp>& rand_augment_op_list(bool increasing);

enum class AffineInterpolation : uint8_t {
  Bilinear,
  Bicubic,
  Random
};  // Random: each op draws one

// timm's hparams for the ops. Defaults: what timm's training transform passes for DeiT
// (interpolation bicubic, img_mean from the ImageNet mean (0.485, 0.456, 0.406)).
// translate_const (the absolute translations of AutoAugment) is not used by RandAugment's ops.
struct RandAugmentParams {
  Rgb fill = {124, 116, 104};  // fillcolor of the geometric ops (timm's img_mean)
  AffineInterpolation interpolation = AffineInterpolation::Bicubic;
  double translate_pct = 0.45;  // TranslateXRel/YRel's range, a fraction of the size
};
// timm's img_mean: min(255, round(255 m)) per channel of a [0, 1] mean (round half to even).
Rgb fill_from_mean(const std::vector<double>& mean);

struct RandAugmentOptions {
  double magnitude = 10;
  int64_t num_layers = 2;
  double prob = 0.5;
  double magnitude_std = 0;   // 0: none; infinity: uniform in [0, magnitude]
  double magnitude_max = 10;  // the clip's upper bound
  bool increasing = false;
  RandAugmentParams params;
};
// Parses a timm config string (grammar above); errors name `key` (the setting it came from) and the
// offending token.
RandAugmentOptions parse_rand_augment(const std::string& spec, const std::string& key);

// One layer's draw.
struct RandLayer {
  RandOp op = RandOp::AutoContrast;
  bool applied = false;
  double magnitude = 0;                             // after noise and clipping (when applied)
  bool negate = false;                              // signed ops only (when applied)
  Interpolation resample = Interpolation::Bicubic;  // geometric ops (when applied)
};

// Draws the layers in this order (timm's order; the sources differ, so values do not match timm's
// bit for bit, only in distribution):
//   1. every layer's op, uniform with replacement over the op list (Rng::randint);
//   2. then per layer: if prob < 1, u = uniform(), the layer is skipped when u > prob; if applied,
//      the magnitude: magnitude + magnitude_std * normal() (mstd > 0 and finite) or
//      uniform(0, magnitude) (mstd infinite), clipped to [0, magnitude_max]; for signed ops the
//      sign, negated when uniform() > 0.5; for geometric ops under AffineInterpolation::Random, the
//      resampling, randint(0, 2) (0: bilinear, 1: bicubic).
// `layers` is resized to num_layers.
void sample_rand_augment(const RandAugmentOptions& opt, Rng& rng, std::vector<RandLayer>& layers);

// Applies one op at a magnitude (already clipped) with a sign, through timm's level-to-argument
// function: deterministic. params.interpolation must be Bilinear or Bicubic. Posterize to 0 bits
// or fewer (PosterizeIncreasing at magnitude >= 10; Posterize below 2.5) gives black: Pillow 13
// refuses such a posterize (and timm then fails); black is what older Pillow returned.
void apply_rand_op(RandOp op, double magnitude, bool negate, const RandAugmentParams& params,
                   Image& img);

// sample_rand_augment, then the applied layers in order. RGB images only.
void rand_augment(const RandAugmentOptions& opt, Image& img, Rng& rng);

// ---- colour jitter: torchvision ColorJitter(brightness, contrast, saturation), hue 0 ----

// order: a permutation of the four transforms (0 brightness, 1 contrast, 2 saturation, 3 hue,
// never applied here); factor[i] for i < 3, enabled[i] when its jitter is > 0.
struct ColorJitterDraw {
  std::array<int, 4> order = {0, 1, 2, 3};
  std::array<double, 3> factor = {1, 1, 1};
  std::array<bool, 3> enabled = {false, false, false};
};
// torchvision's get_params: the permutation first (Fisher-Yates with Rng::randint), then each
// enabled factor uniform in [max(0, 1 - j), 1 + j], brightness, contrast, saturation. Each jitter
// must be >= 0.
ColorJitterDraw sample_color_jitter(double brightness, double contrast, double saturation,
                                    Rng& rng);
// The enabled transforms in order: ImageEnhance Brightness, Contrast, Color (saturation).
void apply_color_jitter(const ColorJitterDraw& draw, Image& img);
void color_jitter(double brightness, double contrast, double saturation, Image& img, Rng& rng);

}  // namespace mokd::data
