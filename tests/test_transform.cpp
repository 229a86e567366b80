// io/transform: the per-sample transform end to end. Evaluation of JPEG files equals timm's
// create_transform(is_training=False) to the last bit (tools/reference/data_transform.py); the
// train transform is reproducible from the sample's key, keeps the configured size and order, and
// refuses what it cannot do with a message.
#include <gtest/gtest.h>

#include <cstring>

#include "io/augment.h"
#include "io/decode.h"
#include "io/transform.h"
#include "test_util.h"

namespace mokd::data {
namespace {

using test::expect_error;

const test::Fixture& fixture() {
  static const test::Fixture fx("data_transform.safetensors");  // tools/reference/data_transform.py
  return fx;
}

RawSample encoded(const Tensor& bytes_f16) {
  std::vector<float> v = bytes_f16.to_vector();
  RawSample r;
  r.bytes.assign(v.begin(), v.end());
  r.encoded = true;
  return r;
}

TEST(TransformEval, JpegFilesEqualTimmsEvalTransform) {
  const test::Fixture& fx = fixture();
  Normalize norm{fx.param_fv("mean"), fx.param_fv("std")};
  const std::vector<float> table = normalize_table(norm, 3);
  int cases = 0;
  for (const auto& [name, c] : fx.param("cases").items()) {
    SCOPED_TRACE(name);
    TransformOptions o;
    o.train = false;
    o.height = o.width = c["size"].get<int64_t>();
    o.crop_pct = c["crop_pct"].get<double>();
    o.interpolation = parse_interpolation(c["interpolation"].get<std::string>(), "case");
    SampleTransform t(o, 0, 0, 3);
    Image out;
    Rng rng(RngKey{1, 0});
    t.apply(encoded(fx[name + "_file"]), name, rng, out);
    ASSERT_EQ(out.height, o.height);
    ASSERT_EQ(out.width, o.width);
    std::vector<float> got(out.pixels.size());
    normalize(out.data(), out.height * out.width, 3, table, got.data());
    std::vector<float> want = fx[name + "_out"].to_vector();
    ASSERT_EQ(got.size(), want.size());
    int64_t diff = 0;
    for (size_t i = 0; i < got.size(); ++i) diff += got[i] != want[i];
    EXPECT_EQ(diff, 0) << "values differing from timm";
    EXPECT_EQ(rng.position(), 0u) << "evaluation draws nothing";
    ++cases;
  }
  EXPECT_EQ(cases, 6);
}

// A smooth 3-channel test image, decoded.
RawSample pixels(int64_t h, int64_t w, int64_t c) {
  RawSample r;
  r.encoded = false;
  r.height = h;
  r.width = w;
  r.channels = c;
  r.bytes.resize(static_cast<size_t>(h * w * c));
  for (int64_t i = 0; i < h * w * c; ++i) r.bytes[i] = static_cast<uint8_t>((i * 37 + i / 7) % 251);
  return r;
}

TransformOptions deit_train(int64_t size) {
  TransformOptions o;
  o.train = true;
  o.height = o.width = size;
  o.augment.random_resized_crop = true;
  o.augment.hflip = true;
  o.rand_augment = true;
  o.rand_augment_options = parse_rand_augment("rand-m9-mstd0.5-inc1", "data.auto_augment");
  return o;
}

TEST(TransformTrain, ReproducibleFromTheSampleKeyAndSized) {
  SampleTransform t(deit_train(24), 0, 0, 3);
  RawSample raw = pixels(50, 70, 3);
  Image a, b, other;
  for (int64_t pos = 0; pos < 20; ++pos) {
    Rng r1(RngKey{7, uint64_t(pos) << 12}), r2(RngKey{7, uint64_t(pos) << 12}),
        r3(RngKey{8, uint64_t(pos) << 12});
    t.apply(raw, "x", r1, a);
    t.apply(raw, "x", r2, b);
    t.apply(raw, "x", r3, other);
    ASSERT_EQ(a.height, 24);
    ASSERT_EQ(a.width, 24);
    ASSERT_EQ(a.channels, 3);
    EXPECT_EQ(a.pixels, b.pixels) << "same key, same pixels";
    EXPECT_GT(r1.position(), 0u);
    EXPECT_LT(r1.position(), 4096u) << "a sample's stream holds 2^12 words";
  }
  EXPECT_NE(a.pixels, other.pixels);
}

// Without RandomResizedCrop, an image file is fitted like the evaluation with crop_pct 1 (the
// whole shorter side, centred); the flip is the only change.
TEST(TransformTrain, WithoutCropTheImageIsFittedThenFlipped) {
  TransformOptions o;
  o.train = true;
  o.height = o.width = 16;
  o.augment.hflip = true;
  SampleTransform train(o, 0, 0, 3);
  TransformOptions e;
  e.height = e.width = 16;
  e.crop_pct = 1.0;
  SampleTransform eval(e, 0, 0, 3);
  RawSample raw = pixels(20, 30, 3);
  Image fitted, out;
  Rng none(RngKey{0, 0});
  eval.apply(raw, "x", none, fitted);
  int flipped = 0, kept = 0;
  for (int64_t pos = 0; pos < 40; ++pos) {
    Rng rng(RngKey{3, uint64_t(pos) << 12});
    train.apply(raw, "x", rng, out);
    if (out.pixels == fitted.pixels) {
      ++kept;
    } else {
      Image f = out;
      hflip_inplace(f.data(), 16, 16, 3);
      EXPECT_EQ(f.pixels, fitted.pixels);
      ++flipped;
    }
  }
  EXPECT_GT(flipped, 5);
  EXPECT_GT(kept, 5);
}

TEST(TransformErrors, NameTheSampleAndTheKey) {
  expect_error([] { SampleTransform(TransformOptions{}, 0, 0, 3); }, {"data.image_size"});
  TransformOptions ra = deit_train(8);
  expect_error([&] { SampleTransform(ra, 28, 28, 1); }, {"RandAugment", "RGB"});
  SampleTransform t(deit_train(8), 0, 0, 3);
  RawSample junk;
  junk.bytes = {'n', 'o', 'p', 'e'};
  Image out;
  Rng rng(RngKey{0, 0});
  expect_error([&] { t.apply(junk, "/data/x.jpg", rng, out); }, {"/data/x.jpg", "JPEG or PNG"});
  TransformOptions bad = deit_train(8);
  bad.augment.scale_min = 0.9;
  bad.augment.scale_max = 0.1;
  expect_error([&] { SampleTransform(bad, 0, 0, 3); }, {"scale"});
}

}  // namespace
}  // namespace mokd::data
