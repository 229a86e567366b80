// RandAugment and colour jitter (io/randaugment, io/image_ops) against timm's ops on Pillow and
// torchvision's ColorJitter functions (fixtures of tools/reference/data_randaugment.py): every op
// at magnitudes 0, 5, 9, 10 with both signs, byte for byte; the op / apply / magnitude / sign
// histograms of 100,000+ layers against timm's own sampling; the config grammar and its errors.
// No op needs a tolerance: io/image_ops reproduces Pillow's float and double rounding (blend in
// float, the 3x3 filter in float, affine sampling in double, truncation), so every byte is equal.
#include <cmath>
#include <cstring>
#include <map>

#include "io/randaugment.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using namespace mokd::data;
using test::expect_error;

const test::Fixture& ops_fixture() {
  static const test::Fixture fx("data_randaugment.safetensors");
  return fx;
}

Image fixture_image(const test::Fixture& fx, int64_t k) {
  const std::vector<int64_t> shape =
      fx.param("images").at(static_cast<size_t>(k)).get<std::vector<int64_t>>();
  Image img(shape.at(0), shape.at(1), shape.at(2));
  img.pixels = test::unpack_u8(fx["image" + std::to_string(k)], img.pixels.size());
  return img;
}

Image expected_image(const test::Fixture& fx, const nlohmann::json& c) {
  Image img = fixture_image(fx, c.at("image").get<int64_t>());
  img.pixels = test::unpack_u8(fx[c.at("out").get<std::string>()], img.pixels.size());
  return img;
}

// The hparams timm's DeiT transform passes, as the fixture recorded them.
RandAugmentParams fixture_params(const test::Fixture& fx, const std::string& interpolation) {
  RandAugmentParams p;
  const std::vector<int64_t> fill = fx.param_iv("hparams.fillcolor");
  p.fill = {static_cast<uint8_t>(fill.at(0)), static_cast<uint8_t>(fill.at(1)),
            static_cast<uint8_t>(fill.at(2))};
  p.translate_pct = fx.param_d("hparams.translate_pct");
  EXPECT_TRUE(interpolation == "bicubic" || interpolation == "bilinear") << interpolation;
  p.interpolation =
      interpolation == "bicubic" ? AffineInterpolation::Bicubic : AffineInterpolation::Bilinear;
  return p;
}

// "" when equal, else how many bytes differ, the worst difference and where.
std::string compare(const Image& got, const Image& want) {
  if (got.height != want.height || got.width != want.width || got.channels != want.channels)
    return "shape " + std::to_string(got.height) + "x" + std::to_string(got.width) + " vs " +
           std::to_string(want.height) + "x" + std::to_string(want.width);
  int64_t diff = 0, worst = 0, at = -1;
  for (size_t i = 0; i < got.pixels.size(); ++i) {
    const int64_t d = std::abs(int64_t(got.pixels[i]) - int64_t(want.pixels[i]));
    if (d == 0) continue;
    ++diff;
    if (d > worst) worst = d, at = static_cast<int64_t>(i);
  }
  if (diff == 0) return "";
  const int64_t px = at / 3;
  return std::to_string(diff) + " bytes differ, worst " + std::to_string(worst) + " at (y " +
         std::to_string(px / got.width) + ", x " + std::to_string(px % got.width) + ", c " +
         std::to_string(at % 3) + ")";
}

TEST(RandAugmentOps, EveryOpEqualsTimmOnPillow) {
  const test::Fixture& fx = ops_fixture();
  const nlohmann::json& cases = fx.param("cases");
  ASSERT_GT(cases.size(), 200u);
  std::map<std::string, int> seen;
  for (const nlohmann::json& c : cases) {
    const std::string op = c.at("op").get<std::string>();
    const double m = c.at("magnitude").get<double>();
    const bool negate = c.at("negate").get<bool>();
    const std::string interp = c.at("interpolation").get<std::string>();
    Image img = fixture_image(fx, c.at("image").get<int64_t>());
    apply_rand_op(rand_op_from_name(op), m, negate, fixture_params(fx, interp), img);
    EXPECT_EQ(compare(img, expected_image(fx, c)), "")
        << op << " magnitude " << m << (negate ? " negated" : "") << " " << interp << " on image"
        << c.at("image") << " (timm's argument " << c.at("args").dump() << ")";
    // The ops whose level function draws a sign, as timm's functions showed when probed.
    EXPECT_EQ(rand_op_signed(rand_op_from_name(op)), c.at("signed").get<bool>()) << op;
    ++seen[op];
  }
  // Every op of both lists was covered.
  for (bool inc : {false, true})
    for (RandOp op : rand_augment_op_list(inc))
      EXPECT_GT(seen[rand_op_name(op)], 0) << rand_op_name(op);
}

TEST(RandAugmentOps, EnhanceEqualsPillowAtAnyFactor) {
  const test::Fixture& fx = ops_fixture();
  for (const nlohmann::json& c : fx.param("enhance")) {
    const std::string op = c.at("op").get<std::string>();
    const double f = c.at("factor").get<double>();
    Image img = fixture_image(fx, c.at("image").get<int64_t>());
    if (op == "Color") enhance_color(img, f);
    if (op == "Contrast") enhance_contrast(img, f);
    if (op == "Brightness") enhance_brightness(img, f);
    if (op == "Sharpness") enhance_sharpness(img, f);
    EXPECT_EQ(compare(img, expected_image(fx, c)), "")
        << op << " factor " << f << " on image" << c.at("image");
  }
}

TEST(ColorJitter, EqualsTorchvisionForGivenOrderAndFactors) {
  const test::Fixture& fx = ops_fixture();
  for (const nlohmann::json& c : fx.param("jitter")) {
    ColorJitterDraw d;
    const std::vector<int> order = c.at("order").get<std::vector<int>>();
    d.order = {order.at(0), order.at(1), order.at(2), 3};
    d.factor = {c.at("brightness").get<double>(), c.at("contrast").get<double>(),
                c.at("saturation").get<double>()};
    d.enabled = {true, true, true};
    Image img = fixture_image(fx, c.at("image").get<int64_t>());
    apply_color_jitter(d, img);
    EXPECT_EQ(compare(img, expected_image(fx, c)), "") << c.dump();
  }
}

TEST(RandAugmentOps, PosterizeToNoBitsIsBlackAndSmallImagesWork) {
  Image img(5, 4, 3);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(37 * i);
  RandAugmentParams p;
  Image black = img;
  apply_rand_op(RandOp::PosterizeIncreasing, 10, false, p, black);
  for (uint8_t v : black.pixels) ASSERT_EQ(v, 0);
  Image b2 = img;
  apply_rand_op(RandOp::Posterize, 2.4, false, p, b2);
  EXPECT_EQ(b2.pixels, black.pixels);
  // 1x1 and 2x2 images through every op: no out-of-bounds tap (ASan builds check), shape kept.
  for (int64_t s : {1, 2}) {
    for (RandOp op : rand_augment_op_list(true)) {
      Image tiny(s, s, 3);
      std::fill(tiny.pixels.begin(), tiny.pixels.end(), 90);
      apply_rand_op(op, 7, true, p, tiny);
      EXPECT_EQ(tiny.height * tiny.width * 3, static_cast<int64_t>(tiny.pixels.size()));
      EXPECT_EQ(tiny.height, s);
    }
  }
}

TEST(RandAugmentOps, RefusesGrayscaleAndBadArguments) {
  Image gray(4, 4, 1);
  RandAugmentParams p;
  expect_error([&] { apply_rand_op(RandOp::Equalize, 5, false, p, gray); },
               {"Equalize", "RGB image", "4x4x1"});
  expect_error([&] { enhance_sharpness(gray, 2); }, {"enhance_sharpness", "RGB image", "4x4x1"});
  Image dst;
  expect_error(
      [&] {
        rotate(gray, 10, Interpolation::Bicubic, Rgb{0, 0, 0}, dst);
      },
      {"rotate", "RGB image"});
  Rng rng(data_key(1, 0, DataPurpose::Sample, 0));
  RandAugmentOptions opt;
  opt.prob = 1.0;
  expect_error([&] { rand_augment(opt, gray, rng); }, {"rand_augment", "1 channels"});
  // A geometric op leaves a refused image as it was.
  expect_error([&] { apply_rand_op(RandOp::ShearX, 5, false, p, gray); },
               {"ShearX", "RGB image", "4x4x1"});
  EXPECT_EQ(gray.channels, 1);
  EXPECT_EQ(gray.pixels.size(), 16u);
  Image img(4, 4, 3);
  opt.magnitude_std = std::nan("");
  expect_error([&] { rand_augment(opt, img, rng); }, {"magnitude_std", ">= 0"});
  expect_error([&] { apply_rand_op(RandOp::Rotate, -1, false, p, img); },
               {"Rotate", "magnitude", "-1"});
  p.interpolation = AffineInterpolation::Random;
  expect_error([&] { apply_rand_op(RandOp::Rotate, 1, false, p, img); }, {"fixed interpolation"});
  expect_error([&] { rand_op_from_name("Cutout"); }, {"unknown op", "Cutout"});
  expect_error([&] { color_jitter(0.4, -0.1, 0.4, img, rng); }, {"contrast", ">= 0", "-0.1"});
  expect_error([&] { fill_from_mean({0.5, 0.5}); }, {"per RGB channel"});
}

TEST(RandAugmentParse, TimmGrammar) {
  RandAugmentOptions o = parse_rand_augment("rand-m9-mstd0.5-inc1", "data.auto_augment");
  EXPECT_EQ(o.magnitude, 9);
  EXPECT_EQ(o.num_layers, 2);
  EXPECT_EQ(o.prob, 0.5);
  EXPECT_EQ(o.magnitude_std, 0.5);
  EXPECT_EQ(o.magnitude_max, 10);
  EXPECT_TRUE(o.increasing);
  o = parse_rand_augment("rand-n3-p0.7-mstd101-mmax15", "k");
  EXPECT_EQ(o.magnitude, 10);
  EXPECT_EQ(o.num_layers, 3);
  EXPECT_EQ(o.prob, 0.7);
  EXPECT_TRUE(std::isinf(o.magnitude_std));  // > 100: uniform sampling
  EXPECT_EQ(o.magnitude_max, 15);
  EXPECT_FALSE(o.increasing);
  EXPECT_EQ(parse_rand_augment("rand-mmax0-inc0", "k").magnitude_max, 10);  // timm: 0 or 10
  EXPECT_EQ(parse_rand_augment("rand", "k").magnitude, 10);
  // The defaults are DeiT's hparams.
  EXPECT_EQ(o.params.fill, fill_from_mean({0.485, 0.456, 0.406}));
  EXPECT_EQ(o.params.fill, (Rgb{124, 116, 104}));
  EXPECT_EQ(o.params.interpolation, AffineInterpolation::Bicubic);

  const std::string key = "data.auto_augment";
  expect_error([&] { parse_rand_augment("augmix-m3", key); }, {key, "start with 'rand'"});
  expect_error([&] { parse_rand_augment("rand-m9-w0", key); }, {key, "'w0'", "weighted"});
  expect_error([&] { parse_rand_augment("rand-tweights", key); }, {key, "'tweights'", "op set"});
  expect_error([&] { parse_rand_augment("rand-m9-foo", key); }, {key, "'foo'", "no value"});
  expect_error([&] { parse_rand_augment("rand-x3", key); }, {key, "'x3'", "unknown key 'x'"});
  expect_error([&] { parse_rand_augment("rand-m9.5", key); }, {key, "'m9.5'", "integer"});
  expect_error([&] { parse_rand_augment("rand-p0.5x", key); }, {key, "'p0.5x'", "number"});
  expect_error([&] { parse_rand_augment("rand-m9-m5", key); }, {key, "'m5'", "repeats"});
  expect_error([&] { parse_rand_augment("rand-m9-", key); }, {key, "empty"});
  expect_error([&] { parse_rand_augment("rand-n65", key); }, {key, "'n65'", "64 layers"});
  expect_error([&] { parse_rand_augment("rand-m99999999999999999999", key); }, {key, "integer"});
}

// Two independent binomial counts of the same probability p over n1 and n2 trials: their
// difference of rates has variance p (1 - p) (1/n1 + 1/n2); 5 sigma bounds a false failure per
// comparison below 6e-7. p is the pooled rate.
void expect_same_rate(int64_t k1, int64_t n1, int64_t k2, int64_t n2, const std::string& what) {
  const double p = double(k1 + k2) / double(n1 + n2);
  const double sigma = std::sqrt(std::max(p * (1 - p), 1e-12) * (1.0 / n1 + 1.0 / n2));
  const double d = std::abs(double(k1) / n1 - double(k2) / n2);
  EXPECT_LE(d, 5 * sigma + 1e-12) << what << ": " << k1 << "/" << n1 << " vs timm " << k2 << "/"
                                  << n2 << " (" << d / std::max(sigma, 1e-300) << " sigma)";
}

TEST(RandAugmentDistribution, MatchesTimmSampling) {
  const test::Fixture fx("data_randaugment_dist.safetensors");
  const nlohmann::json& specs = fx.param("specs");
  ASSERT_EQ(specs.size(), 3u);
  std::vector<RandLayer> layers;
  for (size_t s = 0; s < specs.size(); ++s) {
    const nlohmann::json& info = specs[s];
    const std::string spec = info.at("spec").get<std::string>();
    const RandAugmentOptions opt = parse_rand_augment(spec, "test");
    const std::string pre = "spec" + std::to_string(s) + "_";
    const std::vector<std::string> names = info.at("ops").get<std::vector<std::string>>();
    const std::vector<RandOp>& ops = rand_augment_op_list(opt.increasing);
    ASSERT_EQ(names.size(), ops.size()) << spec;
    for (size_t i = 0; i < ops.size(); ++i) EXPECT_EQ(names[i], rand_op_name(ops[i])) << spec;
    const double upper = info.at("upper").get<double>();
    EXPECT_EQ(upper, opt.magnitude_max) << spec;
    const int64_t bins = info.at("bins").get<int64_t>();
    const int64_t images = info.at("images").get<int64_t>();

    std::vector<int64_t> op_counts(ops.size()), hist(static_cast<size_t>(bins + 1));
    int64_t applied = 0, sign_draws = 0, negated = 0, n_layers = 0;
    for (int64_t i = 0; i < images; ++i) {
      Rng rng(data_key(11 + s, 0, DataPurpose::Sample, i));
      sample_rand_augment(opt, rng, layers);
      for (const RandLayer& l : layers) {
        ++n_layers;
        ++op_counts[std::find(ops.begin(), ops.end(), l.op) - ops.begin()];
        if (!l.applied) continue;
        ++applied;
        ASSERT_TRUE(l.magnitude >= 0 && l.magnitude <= upper) << l.magnitude;
        // numpy's equal bins over [0, upper); the clipped magnitude == upper has its own bin.
        const int64_t b =
            l.magnitude == upper
                ? bins
                : std::min(bins - 1, static_cast<int64_t>(l.magnitude / upper * double(bins)));
        ++hist[static_cast<size_t>(b)];
        if (rand_op_signed(l.op)) ++sign_draws, negated += l.negate;
      }
    }
    const int64_t timm_layers = info.at("layers").get<int64_t>();
    ASSERT_EQ(n_layers, timm_layers) << spec;
    const std::vector<int64_t> t_ops = fx[pre + "op_counts"].to_vector_i64();
    for (size_t i = 0; i < ops.size(); ++i)
      expect_same_rate(op_counts[i], n_layers, t_ops[i], timm_layers, spec + " op " + names[i]);
    const int64_t t_applied = fx[pre + "applied"].to_vector_i64()[0];
    expect_same_rate(applied, n_layers, t_applied, timm_layers, spec + " applied");
    const std::vector<int64_t> t_hist = fx[pre + "magnitude_hist"].to_vector_i64();
    ASSERT_EQ(t_hist.size(), hist.size());
    for (size_t b = 0; b < hist.size(); ++b)
      expect_same_rate(hist[b], applied, t_hist[b], t_applied,
                       spec + " magnitude bin " + std::to_string(b) +
                           (b == hist.size() - 1 ? " (== upper)" : ""));
    const int64_t t_signs = fx[pre + "sign_draws"].to_vector_i64()[0];
    expect_same_rate(sign_draws, applied, t_signs, t_applied, spec + " signed ops");
    expect_same_rate(negated, sign_draws, fx[pre + "negated"].to_vector_i64()[0], t_signs,
                     spec + " negated");
  }
}

TEST(RandAugment, ReproducibleFromTheKeyAndChangesImages) {
  const test::Fixture& fx = ops_fixture();
  const Image src = fixture_image(fx, 0);
  const RandAugmentOptions opt = parse_rand_augment("rand-m9-mstd0.5-inc1", "test");
  int changed = 0;
  for (int64_t i = 0; i < 40; ++i) {
    Image a = src, b = src;
    Rng r1(data_key(3, 1, DataPurpose::Sample, i)), r2(data_key(3, 1, DataPurpose::Sample, i));
    rand_augment(opt, a, r1);
    rand_augment(opt, b, r2);
    EXPECT_EQ(a.pixels, b.pixels) << i;
    EXPECT_EQ(r1.position(), r2.position());
    changed += a.pixels != src.pixels;
  }
  // Each of 2 layers applies with p 0.5 and most ops change this image: about 3/4 change.
  EXPECT_GT(changed, 20);
  EXPECT_LT(changed, 40);
  // A drawn layer list applied by hand equals rand_augment.
  Rng r1(data_key(3, 2, DataPurpose::Sample, 5)), r2(data_key(3, 2, DataPurpose::Sample, 5));
  std::vector<RandLayer> layers;
  sample_rand_augment(opt, r1, layers);
  Image a = src, b = src;
  for (const RandLayer& l : layers)
    if (l.applied) apply_rand_op(l.op, l.magnitude, l.negate, opt.params, a);
  rand_augment(opt, b, r2);
  EXPECT_EQ(a.pixels, b.pixels);
}

TEST(ColorJitter, DrawsTorchvisionsRangesAndUniformOrders) {
  std::map<std::array<int, 4>, int> orders;
  const int n = 24000;
  double lo[3] = {9, 9, 9}, hi[3] = {-9, -9, -9}, sum[3] = {0, 0, 0};
  for (int i = 0; i < n; ++i) {
    Rng rng(data_key(4, 0, DataPurpose::Sample, i));
    const ColorJitterDraw d = sample_color_jitter(0.4, 1.5, 0.2, rng);
    ++orders[d.order];
    for (int k = 0; k < 3; ++k) {
      ASSERT_TRUE(d.enabled[k]);
      lo[k] = std::min(lo[k], d.factor[k]), hi[k] = std::max(hi[k], d.factor[k]);
      sum[k] += d.factor[k];
    }
  }
  // Ranges [max(0, 1 - j), 1 + j]: brightness [0.6, 1.4], contrast [0, 2.5], saturation
  // [0.8, 1.2]; their means within 5 standard errors.
  const double want_lo[3] = {0.6, 0.0, 0.8}, want_hi[3] = {1.4, 2.5, 1.2};
  for (int k = 0; k < 3; ++k) {
    EXPECT_GE(lo[k], want_lo[k]);
    EXPECT_LE(hi[k], want_hi[k]);
    EXPECT_LT(lo[k], want_lo[k] + 0.01);
    EXPECT_GT(hi[k], want_hi[k] - 0.01);
    const double width = want_hi[k] - want_lo[k];
    EXPECT_NEAR(sum[k] / n, (want_lo[k] + want_hi[k]) / 2, 5 * width / std::sqrt(12.0 * n));
  }
  // All 24 orders, each 1/24 within 5 binomial sigma.
  ASSERT_EQ(orders.size(), 24u);
  const double p = 1.0 / 24, sigma = std::sqrt(n * p * (1 - p));
  for (const auto& [order, count] : orders) EXPECT_NEAR(count, n * p, 5 * sigma);
  // A zero jitter is no transform and no draw.
  Rng rng(data_key(4, 1, DataPurpose::Sample, 0));
  const ColorJitterDraw d = sample_color_jitter(0, 0.3, 0, rng);
  EXPECT_FALSE(d.enabled[0]);
  EXPECT_TRUE(d.enabled[1]);
  EXPECT_FALSE(d.enabled[2]);
  const Image src = fixture_image(ops_fixture(), 1);
  Image img = src;
  ColorJitterDraw none;
  apply_color_jitter(none, img);
  EXPECT_EQ(img.pixels, src.pixels);
}

}  // namespace
}  // namespace mokd
