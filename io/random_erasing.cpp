// timm's RandomErasing on mokd's Rng; the header documents the order of the draws.
#include "io/random_erasing.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "engine/error.h"

namespace mokd::data {

EraseMode parse_erase_mode(const std::string& name) {
  std::string s = name;
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (s.empty() || s == "const") return EraseMode::Const;
  if (s == "rand") return EraseMode::Rand;
  if (s == "pixel") return EraseMode::Pixel;
  MOKD_FAIL("random erasing: mode '", name, "' is not one of 'const', 'rand', 'pixel'");
}

namespace {

void check_options(const RandomErasingOptions& opt) {
  MOKD_CHECK(opt.probability >= 0 && opt.probability <= 1, "random erasing: probability ",
             opt.probability, " outside [0, 1]");
  MOKD_CHECK(opt.min_area > 0 && opt.min_area <= opt.max_area && opt.max_area <= 1,
             "random erasing: area (", opt.min_area, ", ", opt.max_area,
             ") must satisfy 0 < min <= max <= 1");
  const double max_aspect = opt.max_aspect > 0 ? opt.max_aspect : 1.0 / opt.min_aspect;
  MOKD_CHECK(opt.min_aspect > 0 && opt.max_aspect >= 0 && opt.min_aspect <= max_aspect,
             "random erasing: aspect (", opt.min_aspect, ", ", opt.max_aspect,
             ") must satisfy 0 < min <= max (max 0: 1 / min)");
  const int max_count = opt.max_count > 0 ? opt.max_count : opt.min_count;
  MOKD_CHECK(opt.min_count >= 1 && opt.max_count >= 0 && opt.min_count <= max_count,
             "random erasing: count (", opt.min_count, ", ", opt.max_count,
             ") must satisfy 1 <= min <= max (max 0: min)");
  // At most 46 words per box: 32 boxes stay well inside a sample's 2^12-word stream (data_key).
  MOKD_CHECK(max_count <= 32, "random erasing: max_count ", max_count,
             " above 32 (the boxes' draws must fit a sample's random stream)");
  MOKD_CHECK(opt.num_splits >= 0, "random erasing: num_splits ", opt.num_splits, " must be >= 0");
}

}  // namespace

std::vector<Box> sample_erasing_boxes(const RandomErasingOptions& opt, int64_t h, int64_t w,
                                      Rng& rng) {
  check_options(opt);
  MOKD_CHECK(h >= 1 && w >= 1, "random erasing: image ", h, "x", w, " is empty");
  std::vector<Box> boxes;
  if (rng.uniform() > opt.probability) return boxes;
  const int max_count = opt.max_count > 0 ? opt.max_count : opt.min_count;
  const double max_aspect = opt.max_aspect > 0 ? opt.max_aspect : 1.0 / opt.min_aspect;
  const double log_lo = std::log(opt.min_aspect), log_hi = std::log(max_aspect);
  const int count = opt.min_count == max_count
                        ? opt.min_count
                        : static_cast<int>(rng.randint(opt.min_count, max_count + 1));
  const double area = static_cast<double>(h * w);
  for (int k = 0; k < count; ++k) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      // Python evaluates uniform * area / count left to right; so does this.
      const double target = rng.uniform(opt.min_area, opt.max_area) * area / count;
      const double aspect = std::exp(rng.uniform(log_lo, log_hi));
      const int64_t bh = static_cast<int64_t>(std::nearbyint(std::sqrt(target * aspect)));
      const int64_t bw = static_cast<int64_t>(std::nearbyint(std::sqrt(target / aspect)));
      if (bw < w && bh < h) {
        const int64_t top = rng.randint(0, h - bh + 1);
        const int64_t left = rng.randint(0, w - bw + 1);
        boxes.push_back(Box{top, left, bh, bw});
        break;
      }
    }
  }
  return boxes;
}

std::vector<Box> random_erasing(const RandomErasingOptions& opt, float* hwc, int64_t h, int64_t w,
                                int64_t c, Rng& rng) {
  MOKD_CHECK(c >= 1, "random erasing: ", c, " channels; expected >= 1");
  std::vector<Box> boxes = sample_erasing_boxes(opt, h, w, rng);
  std::vector<float> colour(static_cast<size_t>(c), 0.f);
  for (const Box& b : boxes) {
    if (opt.mode == EraseMode::Pixel) {
      // Box-Muller pairs: both the cosine and the sine value are used (half the draws and
      // logarithms of one normal() per value).
      Rng noise(RngKey{rng.u64(), 0});
      const int64_t row = b.width * c;
      for (int64_t y = b.top; y < b.top + b.height; ++y) {
        float* p = hwc + (y * w + b.left) * c;
        for (int64_t i = 0; i < row; i += 2) {
          const double r = std::sqrt(-2.0 * std::log(1.0 - noise.uniform()));
          const double a = 2.0 * M_PI * noise.uniform();
          p[i] = static_cast<float>(r * std::cos(a));
          if (i + 1 < row) p[i + 1] = static_cast<float>(r * std::sin(a));
        }
      }
      continue;
    }
    if (opt.mode == EraseMode::Rand)
      for (int64_t k = 0; k < c; ++k) colour[k] = static_cast<float>(rng.normal());
    for (int64_t y = b.top; y < b.top + b.height; ++y) {
      float* p = hwc + (y * w + b.left) * c;
      for (int64_t x = 0; x < b.width; ++x) std::copy(colour.begin(), colour.end(), p + x * c);
    }
  }
  return boxes;
}

std::vector<EraseBox> plan_random_erasing(const RandomErasingOptions& opt, int64_t h, int64_t w,
                                          int64_t c, int32_t sample, Rng& rng) {
  MOKD_CHECK(c >= 1 && c <= kEraseMaxChannels, "random erasing: ", c,
             " channels; the batch preparation erases 1 to ", kEraseMaxChannels);
  std::vector<EraseBox> plan;
  for (const Box& b : sample_erasing_boxes(opt, h, w, rng)) {
    EraseBox e;
    e.sample = sample;
    e.top = static_cast<int32_t>(b.top);
    e.left = static_cast<int32_t>(b.left);
    e.height = static_cast<int32_t>(b.height);
    e.width = static_cast<int32_t>(b.width);
    if (opt.mode == EraseMode::Pixel) {
      e.pixel_noise = 1;
      e.noise_key = rng.u64();
    } else if (opt.mode == EraseMode::Rand) {
      for (int64_t k = 0; k < c; ++k) e.colour[k] = static_cast<float>(rng.normal());
    }
    plan.push_back(e);
  }
  return plan;
}

void random_erasing_batch(const RandomErasingOptions& opt, float* nhwc, int64_t n, int64_t h,
                          int64_t w, int64_t c, Rng& rng) {
  MOKD_CHECK(n >= 0, "random erasing: batch of ", n, " samples");
  const int64_t start = opt.num_splits > 1 ? n / opt.num_splits : 0;
  for (int64_t i = start; i < n; ++i) random_erasing(opt, nhwc + i * h * w * c, h, w, c, rng);
}

}  // namespace mokd::data
