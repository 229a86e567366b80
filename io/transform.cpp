// The per-sample transform (io/transform.h): decode, geometry, flip and colour, on uint8.
#include "io/transform.h"

#include <algorithm>
#include <cstring>

#include "engine/error.h"
#include "io/decode.h"
#include "io/eval_geometry.h"
#include "io/random_resized_crop.h"

namespace mokd::data {

namespace {

// dst = the window `box` of src; pixels of the window outside src are zero (torchvision's
// CenterCrop pads with zeros when the crop is larger than the image).
void crop_window(const Image& src, const Box& box, Image& dst) {
  const int64_t c = src.channels;
  dst.reset(box.height, box.width, c);
  const bool inside = box.top >= 0 && box.left >= 0 && box.top + box.height <= src.height &&
                      box.left + box.width <= src.width;
  if (!inside) std::fill(dst.pixels.begin(), dst.pixels.end(), uint8_t{0});
  const int64_t x0 = std::max<int64_t>(0, box.left), x1 = std::min(src.width, box.left + box.width);
  if (x1 <= x0) return;
  for (int64_t y = 0; y < box.height; ++y) {
    const int64_t sy = box.top + y;
    if (sy < 0 || sy >= src.height) continue;
    std::memcpy(dst.row(y) + (x0 - box.left) * c, src.row(sy) + x0 * c,
                static_cast<size_t>((x1 - x0) * c));
  }
}

// Per-thread intermediates: a worker reuses their memory from one sample to the next.
struct Scratch {
  Image decoded, a, b;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

SampleTransform::SampleTransform(TransformOptions opt, int64_t height, int64_t width,
                                 int64_t channels)
    : opt_(std::move(opt)), in_h_(height), in_w_(width), c_(channels) {
  const bool fixed = in_h_ > 0 && in_w_ > 0;
  MOKD_CHECK(opt_.height >= 0 && opt_.width >= 0 && (opt_.height > 0) == (opt_.width > 0),
             "transform: the output size must be both sides > 0 or both 0, got ", opt_.height, "x",
             opt_.width);
  MOKD_CHECK(fixed || (opt_.height > 0 && opt_.height == opt_.width),
             "transform: the split holds image files of any size; set the square size to "
             "transform them to (data.image_size)");
  MOKD_CHECK(c_ >= 1, "transform: images need at least 1 channel, got ", c_);
  MOKD_CHECK(opt_.crop_pct > 0 && opt_.crop_pct <= 4, "transform: crop_pct must be in (0, 4], got ",
             opt_.crop_pct);
  MOKD_CHECK(opt_.color_jitter >= 0, "transform: color_jitter must be >= 0, got ",
             opt_.color_jitter);
  MOKD_CHECK(!(opt_.train && (opt_.rand_augment || opt_.color_jitter > 0)) || c_ == 3,
             "transform: RandAugment and colour jitter need RGB images; this split has ", c_,
             " channel(s)");
  out_h_ = opt_.height > 0 ? opt_.height : in_h_;
  out_w_ = opt_.width > 0 ? opt_.width : in_w_;
  if (opt_.augment.random_resized_crop)
    MOKD_CHECK(opt_.augment.scale_min > 0 && opt_.augment.scale_min <= opt_.augment.scale_max &&
                   opt_.augment.scale_max <= 1 && opt_.augment.ratio_min > 0 &&
                   opt_.augment.ratio_min <= opt_.augment.ratio_max,
               "transform: RandomResizedCrop needs 0 < scale_min <= scale_max <= 1 and 0 < "
               "ratio_min <= ratio_max, got scale [",
               opt_.augment.scale_min, ", ", opt_.augment.scale_max, "], ratio [",
               opt_.augment.ratio_min, ", ", opt_.augment.ratio_max, "]");
}

void SampleTransform::fit(const Image& in, double crop_pct, Image& out) const {
  if (in.height == out_h_ && in.width == out_w_) {
    out = in;
    return;
  }
  MOKD_CHECK(out_h_ == out_w_, "transform: resizing a ", in.height, "x", in.width,
             " image needs a square output size, got ", out_h_, "x", out_w_);
  Scratch& s = scratch();
  const EvalGeometry g = eval_geometry(in.height, in.width, out_h_, crop_pct);
  const Image* cur = &in;
  if (g.resize_h != in.height || g.resize_w != in.width) {
    resize(in, g.resize_h, g.resize_w, opt_.interpolation, s.b);
    cur = &s.b;
  }
  crop_window(*cur, g.crop, out);
}

void SampleTransform::train_geometry(const Image& in, Rng& rng, Image& out) const {
  const AugmentOptions& a = opt_.augment;
  Scratch& s = scratch();
  if (a.random_resized_crop) {
    Box box = sample_resized_crop(in.height, in.width, a.scale_min, a.scale_max, a.ratio_min,
                                  a.ratio_max, rng);
    resize(in, box, out_h_, out_w_, opt_.interpolation, out);
  } else {
    fit(in, 1.0, out);  // the whole shorter side, centred
  }
  if (a.crop_padding >= 0) {
    s.a = out;
    random_crop_with_padding(s.a.data(), out_h_, out_w_, c_, a.crop_padding, rng, out.data());
  }
  if (a.hflip && rng.uniform() < 0.5) hflip_inplace(out.data(), out_h_, out_w_, c_);
  if (opt_.rand_augment)
    rand_augment(opt_.rand_augment_options, out, rng);
  else if (opt_.color_jitter > 0)
    color_jitter(opt_.color_jitter, opt_.color_jitter, opt_.color_jitter, out, rng);
}

void SampleTransform::apply(const RawSample& raw, const std::string& source, Rng& rng,
                            Image& out) const {
  Scratch& s = scratch();
  if (raw.encoded) {
    decode_image(raw.bytes.data(), raw.bytes.size(), source, s.decoded);
    MOKD_CHECK(c_ == 3, source, ": image files decode to RGB; this split expects ", c_,
               " channel(s)");
  } else {
    MOKD_CHECK(raw.channels == c_ && raw.height > 0 && raw.width > 0 &&
                   raw.bytes.size() == static_cast<size_t>(raw.height * raw.width * raw.channels),
               source, ": a ", raw.height, "x", raw.width, "x", raw.channels, " image of ",
               raw.bytes.size(), " bytes, expected ", c_, " channel(s)");
    s.decoded.height = raw.height;
    s.decoded.width = raw.width;
    s.decoded.channels = raw.channels;
    s.decoded.pixels = raw.bytes;
  }
  if (opt_.train)
    train_geometry(s.decoded, rng, out);
  else
    fit(s.decoded, opt_.crop_pct, out);
}

}  // namespace mokd::data
