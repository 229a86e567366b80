// The per-sample transform: a stored sample (an encoded JPEG/PNG or decoded pixels) to the uint8
// image the model sees, in the order of timm's transforms_imagenet_train / _eval (DeiT's recipe):
//
//   train: decode -> RandomResizedCrop on the original image (or, without it, resize + centre
//          crop to the size) -> padded random crop (small datasets) -> horizontal flip ->
//          RandAugment, or colour jitter when RandAugment is off
//   eval:  decode -> resize the shorter side to floor(size / crop_pct) -> centre crop to size
//
// Normalisation, random erasing and mixup/cutmix follow per batch in the loader (io/loader.h), as
// in DeiT. Splits held decoded at a fixed size (Fashion-MNIST, CIFAR) skip the resizing when no
// size is set. Every random choice comes from the sample's Rng, so a sample's pixels depend only
// on (seed, epoch, position).
#pragma once
#include <cstdint>
#include <string>

#include "io/augment.h"
#include "io/dataset.h"
#include "io/image.h"
#include "io/randaugment.h"
#include "io/resample.h"

namespace mokd::data {

struct TransformOptions {
  bool train = false;
  // Output size; 0: the split's own (fixed-size splits only). Image files need a square size.
  int64_t height = 0, width = 0;
  Interpolation interpolation = Interpolation::Bicubic;  // every resize of this transform
  // train: RandomResizedCrop (augment.random_resized_crop, scale, ratio), crop_padding, hflip.
  AugmentOptions augment;
  bool rand_augment = false;
  RandAugmentOptions rand_augment_options;
  double color_jitter = 0;  // brightness = contrast = saturation factor range, when > 0
  // eval, image files: timm's crop_pct (the centre crop keeps this fraction of the resized side).
  double crop_pct = 0.875;
};

class SampleTransform {
 public:
  // `channels`, `height`, `width`: the split's (0 x 0 for encoded files, which decode to RGB).
  SampleTransform(TransformOptions opt, int64_t height, int64_t width, int64_t channels);

  int64_t out_height() const { return out_h_; }
  int64_t out_width() const { return out_w_; }
  int64_t channels() const { return c_; }
  const TransformOptions& options() const { return opt_; }

  // raw -> out (out_height x out_width x channels). `source` names the sample in errors. rng: the
  // sample's stream (train only; eval draws nothing).
  void apply(const RawSample& raw, const std::string& source, Rng& rng, Image& out) const;

 private:
  void train_geometry(const Image& in, Rng& rng, Image& out) const;
  // Resize the shorter side to floor(size / crop_pct), then centre crop (timm's eval geometry);
  // the image unchanged when it already has the output size.
  void fit(const Image& in, double crop_pct, Image& out) const;

  TransformOptions opt_;
  int64_t in_h_, in_w_, c_, out_h_, out_w_;
};

}  // namespace mokd::data
