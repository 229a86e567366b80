// DeiT's random geometry and sampling against timm/torch (fixture data_sampling.safetensors,
// written by tools/reference/data_sampling.py): torch.randperm and RepeatAugSampler index lists
// and the eval transform's sizes exactly; RandomResizedCrop boxes and random-erasing boxes in
// distribution over 100,000 draws each.
//
// Distribution tolerance. mokd draws from Philox, timm from Python's Mersenne Twister, so only
// the distributions can agree. Each statistic is compared as the difference of two independent
// estimates over N = 100,000 draws: a histogram bin (or the fallback / erased count) with pooled
// frequency p has sigma = sqrt(2 N p (1 - p)); a mean has sigma = sqrt(2) s / sqrt(N); a standard
// deviation sqrt(2) sqrt((m4 - s^4) / N) / (2 s) (m4 the fourth central moment, from mokd's
// sample). The bound is 5 sigma (plus one count for the rounding of a bin): a correct
// implementation fails one of the ~150 statistics with probability ~1e-4, while a wrong rule
// (uniform instead of log-uniform aspect, '<=' for '<', another fallback, w and h swapped) moves
// some bin by tens of sigma. mokd's draws are keyed, so the outcome is fixed, not flaky.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "io/augment.h"
#include "io/eval_geometry.h"
#include "io/random_erasing.h"
#include "io/random_resized_crop.h"
#include "io/repeated_sampler.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using namespace mokd::data;
using test::expect_error;

const char* kFixture = "data_sampling.safetensors";  // tools/reference/data_sampling.py

// ---------------------------------------------------------------- statistics helpers

struct Bins {
  double lo, hi;
  int64_t count;
  int64_t bin(double x) const {
    const double width = (hi - lo) / static_cast<double>(count);
    return std::clamp<int64_t>(static_cast<int64_t>(std::floor((x - lo) / width)), 0, count - 1);
  }
};

Bins bins_of(const test::Fixture& fx, const std::string& path) {
  const nlohmann::json& j = fx.param(path);
  return Bins{j.at(0).get<double>(), j.at(1).get<double>(), j.at(2).get<int64_t>()};
}

// Counts out of n_ours and n_theirs draws: their frequencies agree within 5 sigma of the
// difference (pooled binomial, see the top), plus one count for the binning.
void expect_counts_agree(int64_t ours, int64_t n_ours, int64_t theirs, int64_t n_theirs,
                         const std::string& what) {
  const double n1 = static_cast<double>(n_ours), n2 = static_cast<double>(n_theirs);
  const double p = static_cast<double>(ours + theirs) / (n1 + n2);
  const double sigma = std::sqrt(p * (1.0 - p) * (1.0 / n1 + 1.0 / n2));
  EXPECT_LE(std::abs(static_cast<double>(ours) / n1 - static_cast<double>(theirs) / n2),
            5.0 * sigma + 1.0 / std::min(n1, n2))
      << what << ": mokd " << ours << " of " << n_ours << ", timm " << theirs << " of " << n_theirs
      << " (sigma of the frequency " << sigma << ")";
}

void expect_histograms_agree(const std::vector<int64_t>& ours, int64_t n_ours, const Tensor& theirs,
                             int64_t n_theirs, const std::string& what) {
  const std::vector<int64_t> t = theirs.to_vector_i64();
  ASSERT_EQ(ours.size(), t.size()) << what;
  for (size_t b = 0; b < t.size(); ++b)
    expect_counts_agree(ours[b], n_ours, t[b], n_theirs, what + " bin " + std::to_string(b));
}

struct Moments {
  double n = 0, sum = 0, sum2 = 0, sum3 = 0, sum4 = 0;
  void add(double x) {
    n += 1;
    sum += x;
    sum2 += x * x;
    sum3 += x * x * x;
    sum4 += x * x * x * x;
  }
  double mean() const { return sum / n; }
  double var() const { return sum2 / n - mean() * mean(); }
  double m4() const {
    const double m = mean();
    return sum4 / n - 4 * m * sum3 / n + 6 * m * m * sum2 / n - 3 * m * m * m * m;
  }
};

// theirs = [mean, std] of timm's sample.
void expect_moments_agree(const Moments& ours, const Tensor& theirs, const std::string& what) {
  const std::vector<float> t = theirs.to_vector();
  const double s = std::sqrt(ours.var());
  const double mean_sigma = std::sqrt(2.0) * s / std::sqrt(ours.n);
  const double std_sigma =
      std::sqrt(2.0) * std::sqrt(std::max(0.0, ours.m4() - s * s * s * s) / ours.n) / (2.0 * s);
  EXPECT_NEAR(ours.mean(), t.at(0), 5.0 * mean_sigma) << what << " mean";
  EXPECT_NEAR(s, t.at(1), 5.0 * std_sigma) << what << " std";
}

// ---------------------------------------------------------------- torch.randperm

// sum(i * p[i]) as torch's int64 sum computes it: wrapping modulo 2^64.
int64_t checksum(const std::vector<int64_t>& p) {
  uint64_t sum = 0;
  for (size_t i = 0; i < p.size(); ++i)
    sum += static_cast<uint64_t>(i) * static_cast<uint64_t>(p[i]);
  return static_cast<int64_t>(sum);
}

TEST(SamplingRandperm, MatchesTorchExactly) {
  test::Fixture fx(kFixture);
  const nlohmann::json& cases = fx.param("randperm");
  ASSERT_GE(cases.size(), 10u);
  for (auto it = cases.begin(); it != cases.end(); ++it) {
    const std::string name = "randperm_" + it.key();
    const int64_t n = it.value().at("n").get<int64_t>();
    const uint64_t seed = it.value().at("seed").get<uint64_t>();
    const std::vector<int64_t> p = torch_randperm(n, seed);
    ASSERT_EQ(static_cast<int64_t>(p.size()), n) << name;
    if (fx.count(name)) {
      EXPECT_EQ(p, fx[name].to_vector_i64()) << name;
      continue;
    }
    // Large n: the ends and sum(i * p[i]).
    const std::vector<int64_t> head(p.begin(), p.begin() + 16), tail(p.end() - 16, p.end());
    EXPECT_EQ(head, fx[name + "_head"].to_vector_i64()) << name;
    EXPECT_EQ(tail, fx[name + "_tail"].to_vector_i64()) << name;
    EXPECT_EQ(checksum(p), fx[name + "_checksum"].to_vector_i64().at(0)) << name;
  }
}

TEST(SamplingRandperm, EmptyAndBadSizes) {
  EXPECT_TRUE(torch_randperm(0, 3).empty());
  expect_error([] { torch_randperm(-1, 0); }, {"torch_randperm", "-1"});
}

// torch switches to a 64-bit inside-out shuffle from n = 2^32 / 20; a permutation that large
// takes 1.7 GB and about a minute, so it runs only on request (MOKD_LARGE_RANDPERM=1), against the
// fixture data_sampling_large.safetensors.
TEST(SamplingRandperm, LargePathMatchesTorch) {
  if (!std::getenv("MOKD_LARGE_RANDPERM"))
    GTEST_SKIP() << "set MOKD_LARGE_RANDPERM=1 to run (1.7 GB, about a minute)";
  test::Fixture fx("data_sampling_large.safetensors");  // tools/reference/data_sampling_large.py
  const int64_t n = fx.param_i("n");
  const std::vector<int64_t> p = torch_randperm(n, static_cast<uint64_t>(fx.param_i("seed")));
  const std::vector<int64_t> head(p.begin(), p.begin() + 16), tail(p.end() - 16, p.end());
  EXPECT_EQ(head, fx["head"].to_vector_i64());
  EXPECT_EQ(tail, fx["tail"].to_vector_i64());
  EXPECT_EQ(checksum(p), fx["checksum"].to_vector_i64().at(0));
}

// ---------------------------------------------------------------- RepeatAugSampler

RepeatedAugmentOptions options_of(const nlohmann::json& c) {
  RepeatedAugmentOptions o;
  o.num_repeats = c.at("num_repeats").get<int>();
  o.selected_round = c.at("selected_round").get<int64_t>();
  o.selected_ratio = c.at("selected_ratio").get<double>();
  o.shuffle = c.at("shuffle").get<bool>();
  return o;
}

TEST(SamplingRepeatedAugment, MatchesTimmRepeatAugSampler) {
  test::Fixture fx(kFixture);
  const nlohmann::json& cases = fx.param("sampler");
  ASSERT_GE(cases.size(), 20u);
  for (auto it = cases.begin(); it != cases.end(); ++it) {
    const nlohmann::json& c = it.value();
    const RepeatedAugmentOptions o = options_of(c);
    const int64_t n = c.at("n").get<int64_t>();
    const int world = c.at("world").get<int>();
    // Data seed 0: the generator seed is the epoch, as timm's.
    const std::vector<int64_t> got = repeated_augment_indices(n, c.at("epoch").get<int64_t>(), 0, o,
                                                              c.at("rank").get<int>(), world);
    EXPECT_EQ(got, fx["sampler_" + it.key()].to_vector_i64()) << it.key();
    EXPECT_EQ(repeated_augment_length(n, o, world), static_cast<int64_t>(got.size())) << it.key();
  }
}

TEST(SamplingRepeatedAugment, SeedShiftsTheEpochAndRanksShareImages) {
  const RepeatedAugmentOptions o;
  // The generator seed is seed + epoch.
  EXPECT_EQ(repeated_augment_indices(1000, 2, 5, o, 1, 2),
            repeated_augment_indices(1000, 7, 0, o, 1, 2));
  EXPECT_NE(repeated_augment_indices(1000, 2, 5, o, 1, 2),
            repeated_augment_indices(1000, 2, 6, o, 1, 2));
  // With as many ranks as repeats, every rank visits the same images in the same order (each
  // sees its own augmentation of them): entry j of every rank is perm[j].
  const std::vector<int64_t> perm = torch_randperm(3000, 4);
  for (int rank = 0; rank < 3; ++rank) {
    const std::vector<int64_t> r = repeated_augment_indices(3000, 4, 0, o, rank, 3);
    ASSERT_EQ(r.size(), 3000u / 256 * 256 / 3);
    EXPECT_TRUE(std::equal(r.begin(), r.end(), perm.begin())) << rank;
  }
  EXPECT_TRUE(repeated_augment_indices(0, 0, 0, o, 0, 1).empty());
}

TEST(SamplingRepeatedAugment, BadArgumentsAreErrors) {
  RepeatedAugmentOptions o;
  expect_error([&] { repeated_augment_indices(10, 0, 0, o, 2, 2); }, {"rank 2", "[0, 2)"});
  expect_error([&] { repeated_augment_indices(10, 0, 0, o, 0, 0); }, {"world size 0"});
  expect_error([&] { repeated_augment_indices(-1, 0, 0, o, 0, 1); }, {"dataset size -1"});
  expect_error([&] { repeated_augment_indices(10, -1, 0, o, 0, 1); }, {"epoch -1"});
  o.num_repeats = 0;
  expect_error([&] { repeated_augment_length(10, o, 1); }, {"num_repeats 0"});
  o = {};
  o.selected_ratio = -1;
  expect_error([&] { repeated_augment_length(10, o, 1); }, {"selected_ratio -1"});
}

// ---------------------------------------------------------------- eval geometry

TEST(SamplingEvalGeometry, MatchesTimmEvalTransform) {
  test::Fixture fx(kFixture);
  const nlohmann::json& cases = fx.param("eval");
  ASSERT_GE(cases.size(), 10u);
  for (auto it = cases.begin(); it != cases.end(); ++it) {
    const nlohmann::json& c = it.value();
    const EvalGeometry g =
        eval_geometry(c.at("h").get<int64_t>(), c.at("w").get<int64_t>(),
                      c.at("img_size").get<int64_t>(), c.at("crop_pct").get<double>());
    const std::vector<int64_t> got = {g.resize_h,  g.resize_w,    g.crop.top,
                                      g.crop.left, g.crop.height, g.crop.width};
    EXPECT_EQ(got, fx["eval_" + it.key()].to_vector_i64()) << it.key();
  }
}

TEST(SamplingEvalGeometry, BadSizesAreErrors) {
  expect_error([] { eval_scale_size(224, 0); }, {"crop_pct 0"});
  expect_error([] { eval_scale_size(0, 0.875); }, {"img_size 0"});
  expect_error([] { eval_geometry(0, 5, 224, 0.875); }, {"0x5"});
  expect_error([] { center_crop_box(10, 10, 0, 4); }, {"center crop"});
}

// ---------------------------------------------------------------- RandomResizedCrop

TEST(SamplingResizedCrop, DistributionMatchesTimm) {
  test::Fixture fx(kFixture);
  const int64_t n = fx.param_i("rrc.draws");
  const nlohmann::json& sj = fx.param("rrc.scale");
  const nlohmann::json& rj = fx.param("rrc.ratio");
  const double s0 = sj.at(0).get<double>(), s1 = sj.at(1).get<double>();
  const double r0 = rj.at(0).get<double>(), r1 = rj.at(1).get<double>();
  const Bins area_bins = bins_of(fx, "rrc.bins.area"),
             aspect_bins = bins_of(fx, "rrc.bins.log_aspect");
  const nlohmann::json& cases = fx.param("rrc.cases");
  ASSERT_EQ(cases.size(), 3u);
  for (auto it = cases.begin(); it != cases.end(); ++it) {
    const std::string name = "rrc_" + it.key();
    const int64_t h = it.value().at("h").get<int64_t>(), w = it.value().at("w").get<int64_t>();
    std::vector<int64_t> area(static_cast<size_t>(area_bins.count)),
        aspect(static_cast<size_t>(aspect_bins.count));
    int64_t fallback = 0;
    Moments top, left;
    for (int64_t i = 0; i < n; ++i) {
      Rng rng(data_key(17, 0, DataPurpose::Sample, i));
      bool fell_back = false;
      const Box b = sample_resized_crop(h, w, s0, s1, r0, r1, rng, &fell_back);
      ASSERT_TRUE(b.top >= 0 && b.left >= 0 && b.height >= 1 && b.width >= 1 &&
                  b.top + b.height <= h && b.left + b.width <= w)
          << name << " draw " << i;
      fallback += fell_back;
      area[area_bins.bin(static_cast<double>(b.height * b.width) / static_cast<double>(h * w))]++;
      aspect[aspect_bins.bin(
          std::log(static_cast<double>(b.width) / static_cast<double>(b.height)))]++;
      top.add(static_cast<double>(b.top) / static_cast<double>(h));
      left.add(static_cast<double>(b.left) / static_cast<double>(w));
    }
    expect_histograms_agree(area, n, fx[name + "_area_hist"], n, name + " area");
    expect_histograms_agree(aspect, n, fx[name + "_log_aspect_hist"], n, name + " log aspect");
    expect_counts_agree(fallback, n, fx[name + "_fallback"].to_vector_i64().at(0), n,
                        name + " fallback");
    expect_moments_agree(top, fx[name + "_top_mean_std"], name + " top / h");
    expect_moments_agree(left, fx[name + "_left_mean_std"], name + " left / w");
  }
}

TEST(SamplingResizedCrop, BoxesInBoundsAndCenterFallback) {
  Rng rng(data_key(5, 2, DataPurpose::Sample, 9));
  for (int i = 0; i < 2000; ++i) {
    Box b = sample_resized_crop(40, 60, 0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0, rng);
    ASSERT_TRUE(b.top >= 0 && b.left >= 0 && b.height > 0 && b.width > 0 &&
                b.top + b.height <= 40 && b.left + b.width <= 60);
  }
  // No attempt can fit a 10x100 image at scale ~1 with a ratio near 1: center crop at ratio 4/3.
  bool fell_back = false;
  Box b = sample_resized_crop(10, 100, 0.99, 1.0, 3.0 / 4.0, 4.0 / 3.0, rng, &fell_back);
  EXPECT_TRUE(fell_back);
  EXPECT_EQ(b.height, 10);
  EXPECT_EQ(b.width, 13);  // round(10 * 4/3)
  EXPECT_EQ(b.top, 0);
  EXPECT_EQ(b.left, 43);
  b = sample_resized_crop(100, 10, 0.99, 1.0, 3.0 / 4.0, 4.0 / 3.0, rng, &fell_back);
  EXPECT_TRUE(fell_back);
  EXPECT_EQ(b.width, 10);
  EXPECT_EQ(b.height, 13);  // round(10 / (3/4))
  EXPECT_EQ(b.top, 43);
  // The whole image when its ratio is inside the range and nothing fits.
  b = sample_resized_crop(1, 1, 0.08, 0.1, 3.0 / 4.0, 4.0 / 3.0, rng, &fell_back);
  EXPECT_TRUE(fell_back);
  EXPECT_EQ(b.height, 1);
  EXPECT_EQ(b.width, 1);
  // A fitting attempt: scale 1 and ratio 1 on a square image is the whole image.
  b = sample_resized_crop(32, 32, 1.0, 1.0, 1.0, 1.0, rng, &fell_back);
  EXPECT_FALSE(fell_back);
  EXPECT_EQ(b.top, 0);
  EXPECT_EQ(b.height, 32);
  // timm's randint(0, h - ch) includes both ends: a 6x6 box in a 12x12 image starts at 0 .. 6.
  std::set<int64_t> tops, lefts;
  for (int i = 0; i < 500; ++i) {
    b = sample_resized_crop(12, 12, 0.25, 0.25, 1.0, 1.0, rng);
    ASSERT_EQ(b.height, 6);
    ASSERT_EQ(b.width, 6);
    tops.insert(b.top);
    lefts.insert(b.left);
  }
  EXPECT_EQ(tops, (std::set<int64_t>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(lefts, tops);
  expect_error([&] { sample_resized_crop(10, 10, 0.5, 0.1, 0.75, 1.33, rng); }, {"scale (0.5"});
  expect_error([&] { sample_resized_crop(10, 10, 0.1, 0.5, 0, 1.33, rng); }, {"ratio (0"});
  expect_error([&] { sample_resized_crop(0, 10, 0.1, 0.5, 0.75, 1.33, rng); }, {"0x10"});
}

// ---------------------------------------------------------------- random erasing

TEST(SamplingRandomErasing, DistributionMatchesTimm) {
  test::Fixture fx(kFixture);
  const int64_t n = fx.param_i("erase.draws");
  const std::vector<int64_t> hwc = fx.param_iv("erase.image");
  const int64_t h = hwc.at(0), w = hwc.at(1);
  RandomErasingOptions o;
  o.probability = fx.param_d("erase.probability");
  o.min_area = fx.param_d("erase.min_area");
  o.max_area = fx.param_d("erase.max_area");
  o.min_aspect = fx.param_d("erase.min_aspect");
  o.mode = parse_erase_mode(fx.param_s("erase.mode"));
  const Bins area_bins = bins_of(fx, "erase.bins.area"),
             aspect_bins = bins_of(fx, "erase.bins.log_aspect");
  std::vector<int64_t> area(static_cast<size_t>(area_bins.count)),
      aspect(static_cast<size_t>(aspect_bins.count));
  int64_t erased = 0;
  Moments top, left;
  for (int64_t i = 0; i < n; ++i) {
    Rng rng(data_key(23, 1, DataPurpose::Sample, i));
    const std::vector<Box> boxes = sample_erasing_boxes(o, h, w, rng);
    ASSERT_LE(boxes.size(), 1u);
    if (boxes.empty()) continue;
    const Box& b = boxes[0];
    ASSERT_TRUE(b.top >= 0 && b.left >= 0 && b.top + b.height <= h && b.left + b.width <= w &&
                b.height < h && b.width < w);
    ++erased;
    area[area_bins.bin(static_cast<double>(b.height * b.width) / static_cast<double>(h * w))]++;
    aspect[aspect_bins.bin(
        std::log(static_cast<double>(b.height) / static_cast<double>(b.width)))]++;
    top.add(static_cast<double>(b.top) / static_cast<double>(h));
    left.add(static_cast<double>(b.left) / static_cast<double>(w));
  }
  const int64_t timm_erased = fx["erase_erased"].to_vector_i64().at(0);
  expect_counts_agree(erased, n, timm_erased, n, "erased");
  // The histograms hold the erased draws only.
  expect_histograms_agree(area, erased, fx["erase_area_hist"], timm_erased, "erase area");
  expect_histograms_agree(aspect, erased, fx["erase_log_aspect_hist"], timm_erased,
                          "erase log aspect");
  expect_moments_agree(top, fx["erase_top_mean_std"], "erase top / h");
  expect_moments_agree(left, fx["erase_left_mean_std"], "erase left / w");
}

std::vector<float> ramp(int64_t count) {
  std::vector<float> v(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) v[i] = 0.001f * static_cast<float>(i % 997) + 10.f;
  return v;
}

bool inside(const std::vector<Box>& boxes, int64_t y, int64_t x) {
  for (const Box& b : boxes)
    if (y >= b.top && y < b.top + b.height && x >= b.left && x < b.left + b.width) return true;
  return false;
}

TEST(SamplingRandomErasing, FillModesAndTheBoxesTheyReport) {
  const int64_t h = 48, w = 40, c = 3;
  RandomErasingOptions o;
  o.probability = 1.0;
  o.min_count = 1;
  o.max_count = 3;
  std::set<size_t> counts;
  Moments noise;
  for (EraseMode mode : {EraseMode::Const, EraseMode::Rand, EraseMode::Pixel}) {
    o.mode = mode;
    for (int64_t i = 0; i < 200; ++i) {
      const std::vector<float> orig = ramp(h * w * c);
      std::vector<float> img = orig;
      Rng a(data_key(3, 0, DataPurpose::Sample, i)), b = a;
      const std::vector<Box> boxes = random_erasing(o, img.data(), h, w, c, a);
      // The same draws come first in both: the reported boxes are the sampled ones.
      const std::vector<Box> expect = sample_erasing_boxes(o, h, w, b);
      ASSERT_EQ(boxes.size(), expect.size());
      for (size_t k = 0; k < boxes.size(); ++k)
        ASSERT_TRUE(boxes[k].top == expect[k].top && boxes[k].left == expect[k].left &&
                    boxes[k].height == expect[k].height && boxes[k].width == expect[k].width);
      counts.insert(boxes.size());
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x)
          for (int64_t k = 0; k < c; ++k) {
            const size_t at = static_cast<size_t>((y * w + x) * c + k);
            if (!inside(boxes, y, x)) {
              ASSERT_EQ(img[at], orig[at]) << "outside the boxes, pixel " << y << "," << x;
              continue;
            }
            if (mode == EraseMode::Const) ASSERT_EQ(img[at], 0.f);
            if (mode == EraseMode::Pixel) noise.add(img[at]);
          }
      // Rand: one colour per channel over the last box (it overwrites the others).
      if (mode == EraseMode::Rand && !boxes.empty()) {
        const Box& l = boxes.back();
        for (int64_t k = 0; k < c; ++k) {
          const float v = img[static_cast<size_t>((l.top * w + l.left) * c + k)];
          ASSERT_NE(v, orig[static_cast<size_t>((l.top * w + l.left) * c + k)]);
          for (int64_t y = l.top; y < l.top + l.height; ++y)
            for (int64_t x = l.left; x < l.left + l.width; ++x)
              ASSERT_EQ(img[static_cast<size_t>((y * w + x) * c + k)], v);
        }
      }
    }
  }
  EXPECT_EQ(counts, (std::set<size_t>{1, 2, 3}));  // count uniform in [1, 3]; none missed here
  // Pixel noise is standard normal: 5 sigma on the mean and the variance.
  ASSERT_GT(noise.n, 10000);
  EXPECT_NEAR(noise.mean(), 0.0, 5.0 / std::sqrt(noise.n));
  EXPECT_NEAR(noise.var(), 1.0, 5.0 * std::sqrt(2.0 / noise.n));
}

TEST(SamplingRandomErasing, ProbabilityAndBatchSplits) {
  RandomErasingOptions o;
  o.probability = 0.0;  // u > 0 except for u == 0 exactly
  for (int64_t i = 0; i < 100; ++i) {
    Rng rng(data_key(1, 0, DataPurpose::Sample, i));
    EXPECT_TRUE(sample_erasing_boxes(o, 32, 32, rng).empty());
  }
  // A box must be strictly smaller than the image (timm: w < img_w and h < img_h): a 10x10 box
  // never fits a 10x10 image; a 9x9 one starts at 0 or 1 (randint includes both ends).
  o.probability = 1.0;
  o.min_area = o.max_area = 1.0;
  o.min_aspect = o.max_aspect = 1.0;
  std::set<int64_t> starts;
  for (int64_t i = 0; i < 100; ++i) {
    Rng rng(data_key(2, 0, DataPurpose::Sample, i));
    EXPECT_TRUE(sample_erasing_boxes(o, 10, 10, rng).empty());
    o.min_area = o.max_area = 0.81;
    const std::vector<Box> b = sample_erasing_boxes(o, 10, 10, rng);
    o.min_area = o.max_area = 1.0;
    ASSERT_EQ(b.size(), 1u);
    ASSERT_EQ(b[0].height, 9);
    starts.insert(b[0].top);
    starts.insert(b[0].left);
  }
  EXPECT_EQ(starts, (std::set<int64_t>{0, 1}));
  o = RandomErasingOptions{};
  // num_splits = 2: the first n / 2 samples stay clean, the others are erased (p = 1).
  o.probability = 1.0;
  o.num_splits = 2;
  const int64_t n = 5, h = 16, w = 16, c = 1;
  const std::vector<float> orig = ramp(n * h * w * c);
  std::vector<float> batch = orig;
  Rng rng(data_key(1, 0, DataPurpose::Batch, 0));
  random_erasing_batch(o, batch.data(), n, h, w, c, rng);
  for (int64_t s = 0; s < n; ++s) {
    const bool same = std::equal(batch.begin() + s * h * w, batch.begin() + (s + 1) * h * w,
                                 orig.begin() + s * h * w);
    EXPECT_EQ(same, s < n / 2) << "sample " << s;
  }
}

TEST(SamplingRandomErasing, BadOptionsAreErrors) {
  EXPECT_EQ(parse_erase_mode("PIXEL"), EraseMode::Pixel);
  EXPECT_EQ(parse_erase_mode(""), EraseMode::Const);
  EXPECT_EQ(parse_erase_mode("rand"), EraseMode::Rand);
  expect_error([] { parse_erase_mode("noise"); }, {"'noise'", "'pixel'"});
  Rng rng(data_key(1, 0, DataPurpose::Sample, 0));
  auto with = [&](auto change, std::vector<std::string> parts) {
    RandomErasingOptions o;
    change(o);
    expect_error([&] { sample_erasing_boxes(o, 8, 8, rng); }, parts);
  };
  with([](RandomErasingOptions& o) { o.probability = 1.5; }, {"probability 1.5"});
  with([](RandomErasingOptions& o) { o.min_area = 0.5; }, {"area (0.5"});
  with([](RandomErasingOptions& o) { o.min_aspect = 0; }, {"aspect (0"});
  with([](RandomErasingOptions& o) { o.max_count = 40; }, {"max_count 40"});
  with([](RandomErasingOptions& o) { o.min_count = 0; }, {"count (0"});
  RandomErasingOptions o;
  expect_error([&] { sample_erasing_boxes(o, 0, 8, rng); }, {"0x8"});
  float px = 0;
  expect_error([&] { random_erasing(o, &px, 1, 1, 0, rng); }, {"0 channels"});
}

}  // namespace
}  // namespace mokd
