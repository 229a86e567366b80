// Augmentation: Philox-driven sampling (uniform, normal, Gamma, Beta), crops, flips, the bilinear
// resize (io/resample), normalisation lookup tables and timm-style batch mixup/cutmix.
#include "io/augment.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "engine/error.h"
#include "io/random_resized_crop.h"
#include "io/resample.h"

namespace mokd::data {

// ---- Rng ----

int64_t Rng::randint(int64_t lo, int64_t hi) {
  MOKD_CHECK(hi > lo, "Rng::randint: empty range [", lo, ", ", hi, ")");
  uint64_t n = static_cast<uint64_t>(hi - lo);
  unsigned __int128 m = static_cast<unsigned __int128>(u64()) * n;
  return lo + static_cast<int64_t>(static_cast<uint64_t>(m >> 64));
}

double Rng::normal() {
  double u1 = 1.0 - uniform();  // (0, 1]: log is finite
  double u2 = uniform();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

double Rng::gamma(double alpha) {
  MOKD_CHECK(alpha > 0, "Rng::gamma: alpha must be > 0, got ", alpha);
  if (alpha < 1.0) {
    // Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia-Tsang's boost for a < 1).
    double u = 1.0 - uniform();
    return gamma(alpha + 1.0) * std::pow(u, 1.0 / alpha);
  }
  const double d = alpha - 1.0 / 3.0, c = 1.0 / std::sqrt(9.0 * d);
  for (;;) {
    double x = normal();
    double v = 1.0 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    double u = 1.0 - uniform();
    if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v;
  }
}

double Rng::beta(double a, double b) {
  double x = gamma(a), y = gamma(b);
  return x / (x + y);
}

RngKey data_key(uint64_t seed, int64_t epoch, DataPurpose purpose, int64_t index) {
  MOKD_CHECK(epoch >= 0 && epoch < (int64_t(1) << 19), "data_key: epoch ", epoch,
             " out of range [0, 2^19)");
  MOKD_CHECK(index >= 0 && index < (int64_t(1) << 31), "data_key: index ", index,
             " out of range [0, 2^31)");
  // Layout of the 64-bit word counter: epoch (19 bits) | purpose (2) | index (31) | word (12).
  uint64_t offset = (static_cast<uint64_t>(epoch) << 45) | (static_cast<uint64_t>(purpose) << 43) |
                    (static_cast<uint64_t>(index) << 12);
  return RngKey{Generator(seed, Stream::Data).seed(), offset};
}

std::vector<int64_t> epoch_permutation(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  Rng rng(data_key(seed, epoch, DataPurpose::Order, 0));
  for (int64_t i = n - 1; i > 0; --i) std::swap(perm[i], perm[rng.randint(0, i + 1)]);
  return perm;
}

// ---- per-image transforms ----

void crop_with_padding(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t pad,
                       int64_t top, int64_t left, uint8_t* dst) {
  MOKD_CHECK(pad >= 0 && top >= 0 && left >= 0 && top <= 2 * pad && left <= 2 * pad,
             "crop_with_padding: offset (", top, ", ", left, ") outside [0, ", 2 * pad, "]");
  const int64_t dy = top - pad, dx = left - pad;  // source = destination + (dy, dx)
  const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min<int64_t>(w, w - dx);
  for (int64_t y = 0; y < h; ++y) {
    uint8_t* row = dst + y * w * c;
    int64_t sy = y + dy;
    if (sy < 0 || sy >= h || x1 <= x0) {
      std::memset(row, 0, static_cast<size_t>(w * c));
      continue;
    }
    std::memset(row, 0, static_cast<size_t>(x0 * c));
    std::memcpy(row + x0 * c, src + (sy * w + x0 + dx) * c, static_cast<size_t>((x1 - x0) * c));
    std::memset(row + x1 * c, 0, static_cast<size_t>((w - x1) * c));
  }
}

void random_crop_with_padding(const uint8_t* src, int64_t h, int64_t w, int64_t c, int64_t pad,
                              Rng& rng, uint8_t* dst) {
  int64_t top = rng.randint(0, 2 * pad + 1);
  int64_t left = rng.randint(0, 2 * pad + 1);
  crop_with_padding(src, h, w, c, pad, top, left, dst);
}

void hflip_inplace(uint8_t* img, int64_t h, int64_t w, int64_t c) {
  for (int64_t y = 0; y < h; ++y) {
    uint8_t* row = img + y * w * c;
    for (int64_t a = 0, b = w - 1; a < b; ++a, --b)
      for (int64_t k = 0; k < c; ++k) std::swap(row[a * c + k], row[b * c + k]);
  }
}

void resize_bilinear(const uint8_t* src, int64_t h, int64_t w, int64_t c, const Box& box,
                     int64_t out_h, int64_t out_w, uint8_t* dst) {
  resize(src, h, w, c, box, out_h, out_w, Interpolation::Bilinear, dst);
}

std::vector<float> normalize_table(const Normalize& norm, int64_t channels) {
  MOKD_CHECK(norm.mean.size() == norm.std.size() &&
                 (norm.mean.empty() || static_cast<int64_t>(norm.mean.size()) == channels),
             "normalize: mean has ", norm.mean.size(), " values and std ", norm.std.size(),
             "; expected both empty or ", channels, " (one per channel)");
  std::vector<float> table(static_cast<size_t>(256 * channels));
  for (int64_t k = 0; k < channels; ++k) {
    float m = norm.mean.empty() ? 0.f : norm.mean[k];
    float s = norm.std.empty() ? 1.f : norm.std[k];
    MOKD_CHECK(s > 0, "normalize: std[", k, "] = ", s, " must be > 0");
    // As torchvision: ToTensor's v / 255 in f32, then (x - mean) / std in f32.
    for (int v = 0; v < 256; ++v) table[k * 256 + v] = (static_cast<float>(v) / 255.f - m) / s;
  }
  return table;
}

void normalize(const uint8_t* src, int64_t pixels, int64_t c, const std::vector<float>& table,
               float* dst) {
  if (c == 1) {
    for (int64_t i = 0; i < pixels; ++i) dst[i] = table[src[i]];
    return;
  }
  for (int64_t i = 0; i < pixels; ++i)
    for (int64_t k = 0; k < c; ++k) dst[i * c + k] = table[k * 256 + src[i * c + k]];
}

// ---- mixup / cutmix ----

void mixup_targets(const int64_t* labels, int64_t n, int64_t num_classes, double lam,
                   double smoothing, float* soft) {
  // timm's mixup_target: one-hots with off = s / C and on = 1 - s + off, y1 * lam + y2 * (1 - lam),
  // f32.
  const float off = static_cast<float>(smoothing / static_cast<double>(num_classes));
  const float on =
      static_cast<float>(1.0 - smoothing + smoothing / static_cast<double>(num_classes));
  const float l = static_cast<float>(lam), l1 = static_cast<float>(1.0 - lam);
  for (int64_t i = 0; i < n; ++i) {
    int64_t a = labels[i], b = labels[n - 1 - i];
    MOKD_CHECK(a >= 0 && a < num_classes, "mixup: label ", a, " of sample ", i, " outside [0, ",
               num_classes, ")");
    float* row = soft + i * num_classes;
    for (int64_t k = 0; k < num_classes; ++k) {
      float y1 = k == a ? on : off, y2 = k == b ? on : off;
      row[k] = y1 * l + y2 * l1;
    }
  }
}

MixupResult sample_mixup(const MixupOptions& opt, int64_t h, int64_t w, Rng& rng) {
  MixupResult res;
  const bool mix = opt.mixup_alpha > 0, cut = opt.cutmix_alpha > 0;
  if ((mix || cut) && rng.uniform() < opt.prob) {
    if (mix && cut) {
      res.cutmix = rng.uniform() < opt.switch_prob;
      res.lam = res.cutmix ? rng.beta(opt.cutmix_alpha, opt.cutmix_alpha)
                           : rng.beta(opt.mixup_alpha, opt.mixup_alpha);
    } else if (mix) {
      res.lam = rng.beta(opt.mixup_alpha, opt.mixup_alpha);
    } else {
      res.cutmix = true;
      res.lam = rng.beta(opt.cutmix_alpha, opt.cutmix_alpha);
    }
  }
  res.mixed = res.lam < 1.0;
  if (res.mixed && res.cutmix) {
    // timm's rand_bbox: a box of sqrt(1 - lam) of each side around a uniform centre, clipped.
    double r = std::sqrt(1.0 - res.lam);
    int64_t cut_h = static_cast<int64_t>(h * r), cut_w = static_cast<int64_t>(w * r);
    int64_t cy = rng.randint(0, h), cx = rng.randint(0, w);
    int64_t y0 = std::clamp<int64_t>(cy - cut_h / 2, 0, h),
            y1 = std::clamp<int64_t>(cy + cut_h / 2, 0, h);
    int64_t x0 = std::clamp<int64_t>(cx - cut_w / 2, 0, w),
            x1 = std::clamp<int64_t>(cx + cut_w / 2, 0, w);
    res.box = Box{y0, x0, y1 - y0, x1 - x0};
    if (opt.correct_lam)
      res.lam = 1.0 - static_cast<double>((y1 - y0) * (x1 - x0)) / static_cast<double>(h * w);
  }
  return res;
}

void apply_mixup(const MixupResult& res, float* images, int64_t n, int64_t h, int64_t w,
                 int64_t c) {
  if (!res.mixed) return;
  const int64_t img = h * w * c;
  if (res.cutmix) {
    // x[:, box] = x.flip(0)[:, box]: swap the box between samples i and n-1-i.
    const int64_t y0 = res.box.top, y1 = y0 + res.box.height;
    const int64_t x0 = res.box.left, x1 = x0 + res.box.width;
    for (int64_t i = 0; i < n / 2; ++i) {
      float* a = images + i * img;
      float* b = images + (n - 1 - i) * img;
      for (int64_t y = y0; y < y1; ++y)
        std::swap_ranges(a + (y * w + x0) * c, a + (y * w + x1) * c, b + (y * w + x0) * c);
    }
    return;
  }
  // x = lam x + (1 - lam) flip(x), in f32 as timm's in-place mul_/add_ (no fused multiply-add:
  // CMakeLists.txt compiles this file with -ffp-contract=off).
  const float l = static_cast<float>(res.lam), l1 = static_cast<float>(1.0 - res.lam);
  for (int64_t i = 0; i < (n + 1) / 2; ++i) {
    float* a = images + i * img;
    float* b = images + (n - 1 - i) * img;
    if (a == b) {
      for (int64_t k = 0; k < img; ++k) a[k] = a[k] * l + a[k] * l1;
      continue;
    }
    for (int64_t k = 0; k < img; ++k) {
      float va = a[k], vb = b[k];
      a[k] = va * l + vb * l1;
      b[k] = vb * l + va * l1;
    }
  }
}

MixSpec mix_spec(const MixupResult& res) {
  MixSpec m;
  if (!res.mixed) return m;
  if (res.cutmix) {
    m.mode = MixMode::Cut;
    m.top = static_cast<int32_t>(res.box.top);
    m.left = static_cast<int32_t>(res.box.left);
    m.height = static_cast<int32_t>(res.box.height);
    m.width = static_cast<int32_t>(res.box.width);
  } else {
    m.mode = MixMode::Blend;
    m.lam = static_cast<float>(res.lam);
    m.lam1 = static_cast<float>(1.0 - res.lam);
  }
  return m;
}

MixupResult mixup_batch(const MixupOptions& opt, float* images, int64_t n, int64_t h, int64_t w,
                        int64_t c, const int64_t* labels, int64_t num_classes, Rng& rng,
                        float* soft_targets) {
  MixupResult res = sample_mixup(opt, h, w, rng);
  apply_mixup(res, images, n, h, w, c);
  if (soft_targets)
    mixup_targets(labels, n, num_classes, res.lam, opt.label_smoothing, soft_targets);
  return res;
}

}  // namespace mokd::data
