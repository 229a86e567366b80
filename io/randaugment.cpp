// RandAugment (timm 1.0) and ColorJitter (torchvision) on Pillow's primitives: the config parser,
// timm's level-to-argument functions, the layer sampling and the jitter's draw. The level
// functions keep Python's operation order (this file is compiled with -ffp-contract=off, see
// CMakeLists.txt) so that each op gets the argument timm would pass.
#include "io/randaugment.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <set>

#include "engine/error.h"

namespace mokd::data {

namespace {

struct OpInfo {
  RandOp op;
  const char* name;
  bool is_signed, geometric;
};
constexpr OpInfo kOps[] = {
    {RandOp::AutoContrast, "AutoContrast", false, false},
    {RandOp::Equalize, "Equalize", false, false},
    {RandOp::Invert, "Invert", false, false},
    {RandOp::Rotate, "Rotate", true, true},
    {RandOp::Posterize, "Posterize", false, false},
    {RandOp::PosterizeIncreasing, "PosterizeIncreasing", false, false},
    {RandOp::Solarize, "Solarize", false, false},
    {RandOp::SolarizeIncreasing, "SolarizeIncreasing", false, false},
    {RandOp::SolarizeAdd, "SolarizeAdd", false, false},
    {RandOp::Color, "Color", false, false},
    {RandOp::ColorIncreasing, "ColorIncreasing", true, false},
    {RandOp::Contrast, "Contrast", false, false},
    {RandOp::ContrastIncreasing, "ContrastIncreasing", true, false},
    {RandOp::Brightness, "Brightness", false, false},
    {RandOp::BrightnessIncreasing, "BrightnessIncreasing", true, false},
    {RandOp::Sharpness, "Sharpness", false, false},
    {RandOp::SharpnessIncreasing, "SharpnessIncreasing", true, false},
    {RandOp::ShearX, "ShearX", true, true},
    {RandOp::ShearY, "ShearY", true, true},
    {RandOp::TranslateXRel, "TranslateXRel", true, true},
    {RandOp::TranslateYRel, "TranslateYRel", true, true},
};

const OpInfo& info(RandOp op) {
  const auto i = static_cast<size_t>(op);
  MOKD_CHECK(i < std::size(kOps), "RandAugment: invalid op id ", i);
  return kOps[i];
}

constexpr double kLevelDenom = 10.0;  // timm's _LEVEL_DENOM: magnitude 10 is the full range

// timm's level functions. `level` is the clipped magnitude; Python's int() truncates toward zero.
double signed_level(double v, bool negate) { return negate ? -v : v; }
double enhance_level(double m) { return (m / kLevelDenom) * 1.8 + 0.1; }
double enhance_increasing_level(double m, bool negate) {
  return std::max(0.1, 1.0 + signed_level((m / kLevelDenom) * 0.9, negate));
}
int64_t posterize_level(double m) { return static_cast<int64_t>((m / kLevelDenom) * 4); }
int64_t solarize_level(double m) {
  return std::min<int64_t>(256, static_cast<int64_t>((m / kLevelDenom) * 256));
}

// The per-thread source copy of the geometric ops (reused: no allocation per image once warm).
Image& geometry_scratch() {
  thread_local Image scratch;
  return scratch;
}

void apply_op(RandOp op, double m, bool negate, const Rgb& fill, Interpolation resample,
              double translate_pct, Image& img) {
  // Checked here too: the geometric ops move the pixels to a scratch image before the primitive
  // would check them.
  MOKD_CHECK(
      img.channels == 3 && img.pixels.size() == static_cast<size_t>(img.height * img.width * 3),
      "RandAugment ", rand_op_name(op), ": expected an RGB image (3 channels), got ", img.height,
      "x", img.width, "x", img.channels);
  switch (op) {
    case RandOp::AutoContrast:
      return autocontrast(img);
    case RandOp::Equalize:
      return equalize(img);
    case RandOp::Invert:
      return invert(img);
    case RandOp::Posterize:
      return posterize(img, posterize_level(m));
    case RandOp::PosterizeIncreasing:
      return posterize(img, 4 - posterize_level(m));
    case RandOp::Solarize:
      return solarize(img, solarize_level(m));
    case RandOp::SolarizeIncreasing:
      return solarize(img, 256 - solarize_level(m));
    case RandOp::SolarizeAdd:
      return solarize_add(
          img, std::min<int64_t>(128, static_cast<int64_t>((m / kLevelDenom) * 110)), 128);
    case RandOp::Color:
      return enhance_color(img, enhance_level(m));
    case RandOp::ColorIncreasing:
      return enhance_color(img, enhance_increasing_level(m, negate));
    case RandOp::Contrast:
      return enhance_contrast(img, enhance_level(m));
    case RandOp::ContrastIncreasing:
      return enhance_contrast(img, enhance_increasing_level(m, negate));
    case RandOp::Brightness:
      return enhance_brightness(img, enhance_level(m));
    case RandOp::BrightnessIncreasing:
      return enhance_brightness(img, enhance_increasing_level(m, negate));
    case RandOp::Sharpness:
      return enhance_sharpness(img, enhance_level(m));
    case RandOp::SharpnessIncreasing:
      return enhance_sharpness(img, enhance_increasing_level(m, negate));
    case RandOp::Rotate:
    case RandOp::ShearX:
    case RandOp::ShearY:
    case RandOp::TranslateXRel:
    case RandOp::TranslateYRel:
      break;
  }
  MOKD_CHECK(rand_op_geometric(op), "RandAugment: unhandled op ", rand_op_name(op));
  Image& src = geometry_scratch();
  std::swap(src, img);  // src holds the pixels; img's old buffer becomes the output
  if (op == RandOp::Rotate) {
    rotate(src, signed_level((m / kLevelDenom) * 30.0, negate), resample, fill, img);
    return;
  }
  std::array<double, 6> a = {1, 0, 0, 0, 1, 0};
  const double shear = signed_level((m / kLevelDenom) * 0.3, negate);
  const double pct = signed_level((m / kLevelDenom) * translate_pct, negate);
  if (op == RandOp::ShearX) a[1] = shear;
  if (op == RandOp::ShearY) a[3] = shear;
  if (op == RandOp::TranslateXRel) a[2] = pct * static_cast<double>(src.width);
  if (op == RandOp::TranslateYRel) a[5] = pct * static_cast<double>(src.height);
  affine_transform(src, a, resample, fill, img);
}

// ---- parsing ----

[[noreturn]] void parse_fail(const std::string& key, const std::string& spec,
                             const std::string& token, const std::string& why) {
  MOKD_FAIL(key, ": RandAugment config '", spec, "': token '", token, "' ", why);
}

int64_t parse_int(const std::string& key, const std::string& spec, const std::string& token,
                  const std::string& val) {
  int64_t v = 0;
  const char* end = val.data() + val.size();
  auto [ptr, ec] = std::from_chars(val.data(), end, v);
  if (ec != std::errc() || ptr != end)
    parse_fail(key, spec, token, "needs an integer value, got '" + val + "'");
  return v;
}

double parse_float(const std::string& key, const std::string& spec, const std::string& token,
                   const std::string& val) {
  // Decimal only (digits, one '.', an exponent): what Python's float() reads from such a value.
  bool ok = val.find_first_not_of("0123456789.eE+-") == std::string::npos;
  char* end = nullptr;
  const double v = ok ? std::strtod(val.c_str(), &end) : 0.0;
  if (!ok || end != val.c_str() + val.size() || !std::isfinite(v))
    parse_fail(key, spec, token, "needs a number, got '" + val + "'");
  return v;
}

}  // namespace

const char* rand_op_name(RandOp op) { return info(op).name; }

RandOp rand_op_from_name(const std::string& name) {
  for (const OpInfo& i : kOps)
    if (name == i.name) return i.op;
  MOKD_FAIL("RandAugment: unknown op '", name, "'");
}

bool rand_op_signed(RandOp op) { return info(op).is_signed; }
bool rand_op_geometric(RandOp op) { return info(op).geometric; }

const std::vector<RandOp>& rand_augment_op_list(bool increasing) {
  using R = RandOp;
  static const std::vector<RandOp> plain = {
      R::AutoContrast, R::Equalize,    R::Invert, R::Rotate,        R::Posterize,
      R::Solarize,     R::SolarizeAdd, R::Color,  R::Contrast,      R::Brightness,
      R::Sharpness,    R::ShearX,      R::ShearY, R::TranslateXRel, R::TranslateYRel};
  static const std::vector<RandOp> inc = {R::AutoContrast,
                                          R::Equalize,
                                          R::Invert,
                                          R::Rotate,
                                          R::PosterizeIncreasing,
                                          R::SolarizeIncreasing,
                                          R::SolarizeAdd,
                                          R::ColorIncreasing,
                                          R::ContrastIncreasing,
                                          R::BrightnessIncreasing,
                                          R::SharpnessIncreasing,
                                          R::ShearX,
                                          R::ShearY,
                                          R::TranslateXRel,
                                          R::TranslateYRel};
  return increasing ? inc : plain;
}

Rgb fill_from_mean(const std::vector<double>& mean) {
  MOKD_CHECK(mean.size() == 3, "RandAugment fill: expected a mean per RGB channel, got ",
             mean.size(), " values");
  Rgb fill{};
  for (size_t c = 0; c < 3; ++c) {
    MOKD_CHECK(mean[c] >= 0 && mean[c] <= 1, "RandAugment fill: mean[", c, "] = ", mean[c],
               " is outside [0, 1]");
    // Python's round(): half to even, as nearbyint in the default rounding mode.
    fill[c] = static_cast<uint8_t>(std::min(255.0, std::nearbyint(255 * mean[c])));
  }
  return fill;
}

RandAugmentOptions parse_rand_augment(const std::string& spec, const std::string& key) {
  std::vector<std::string> tokens;
  for (size_t start = 0;;) {
    const size_t dash = spec.find('-', start);
    tokens.push_back(
        spec.substr(start, dash == std::string::npos ? std::string::npos : dash - start));
    if (dash == std::string::npos) break;
    start = dash + 1;
  }
  MOKD_CHECK(tokens[0] == "rand", key, ": RandAugment config '", spec,
             "' must start with 'rand' (e.g. rand-m9-mstd0.5-inc1), got '", tokens[0], "'");
  RandAugmentOptions opt;
  std::set<std::string> seen;
  for (size_t i = 1; i < tokens.size(); ++i) {
    const std::string& tok = tokens[i];
    if (tok.empty()) parse_fail(key, spec, tok, "is empty (two '-' in a row or a trailing '-')");
    if (tok[0] == 't')
      parse_fail(key, spec, tok,
                 "selects an op set; only timm's default lists are supported (inc0 / inc1)");
    // timm splits a token at its first digit: key, then value.
    const size_t digit = tok.find_first_of("0123456789");
    if (digit == std::string::npos) parse_fail(key, spec, tok, "has no value");
    const std::string k = tok.substr(0, digit), val = tok.substr(digit);
    if (k == "w")
      parse_fail(key, spec, tok,
                 "asks for weighted op choice, which is not supported (timm 1.0 dropped 'w')");
    if (!seen.insert(k).second) parse_fail(key, spec, tok, "repeats the key '" + k + "'");
    if (k == "m") {
      opt.magnitude = static_cast<double>(parse_int(key, spec, tok, val));
    } else if (k == "n") {
      const int64_t n = parse_int(key, spec, tok, val);
      if (n > 64) parse_fail(key, spec, tok, "asks for more than 64 layers");
      opt.num_layers = n;
    } else if (k == "p") {
      opt.prob = parse_float(key, spec, tok, val);
    } else if (k == "mstd") {
      const double s = parse_float(key, spec, tok, val);
      opt.magnitude_std = s > 100 ? std::numeric_limits<double>::infinity() : s;
    } else if (k == "mmax") {
      const int64_t mmax = parse_int(key, spec, tok, val);
      opt.magnitude_max = mmax == 0 ? kLevelDenom : static_cast<double>(mmax);
    } else if (k == "inc") {
      opt.increasing = parse_int(key, spec, tok, val) != 0;
    } else {
      parse_fail(key, spec, tok,
                 "has an unknown key '" + k + "' (known: m, n, p, mstd, mmax, inc)");
    }
  }
  return opt;
}

void sample_rand_augment(const RandAugmentOptions& opt, Rng& rng, std::vector<RandLayer>& layers) {
  MOKD_CHECK(opt.num_layers >= 0 && opt.num_layers <= 64,
             "RandAugment: num_layers must be in [0, 64], got ", opt.num_layers);
  MOKD_CHECK(std::isfinite(opt.magnitude) && opt.magnitude >= 0,
             "RandAugment: magnitude must be finite and >= 0, got ", opt.magnitude);
  MOKD_CHECK(opt.magnitude_std >= 0, "RandAugment: magnitude_std must be >= 0 (or infinity), got ",
             opt.magnitude_std);
  MOKD_CHECK(std::isfinite(opt.magnitude_max) && opt.magnitude_max > 0,
             "RandAugment: magnitude_max must be finite and > 0, got ", opt.magnitude_max);
  MOKD_CHECK(std::isfinite(opt.prob), "RandAugment: prob must be finite, got ", opt.prob);
  const std::vector<RandOp>& ops = rand_augment_op_list(opt.increasing);
  layers.assign(static_cast<size_t>(opt.num_layers), RandLayer{});
  for (RandLayer& l : layers)
    l.op = ops[static_cast<size_t>(rng.randint(0, static_cast<int64_t>(ops.size())))];
  for (RandLayer& l : layers) {
    if (opt.prob < 1.0 && rng.uniform() > opt.prob) continue;
    l.applied = true;
    double m = opt.magnitude;
    if (opt.magnitude_std > 0) {
      m = std::isinf(opt.magnitude_std) ? rng.uniform(0, opt.magnitude)
                                        : opt.magnitude + opt.magnitude_std * rng.normal();
    }
    l.magnitude = std::max(0.0, std::min(m, opt.magnitude_max));
    if (rand_op_signed(l.op)) l.negate = rng.uniform() > 0.5;
    if (rand_op_geometric(l.op)) {
      l.resample =
          opt.params.interpolation == AffineInterpolation::Bilinear ? Interpolation::Bilinear
          : opt.params.interpolation == AffineInterpolation::Bicubic
              ? Interpolation::Bicubic
              : (rng.randint(0, 2) == 0 ? Interpolation::Bilinear : Interpolation::Bicubic);
    }
  }
}

void apply_rand_op(RandOp op, double magnitude, bool negate, const RandAugmentParams& params,
                   Image& img) {
  MOKD_CHECK(params.interpolation != AffineInterpolation::Random,
             "apply_rand_op: pass a fixed interpolation (bilinear or bicubic); random is drawn by "
             "rand_augment");
  MOKD_CHECK(std::isfinite(magnitude) && magnitude >= 0, "apply_rand_op(", rand_op_name(op),
             "): magnitude must be finite and >= 0, got ", magnitude);
  apply_op(op, magnitude, negate, params.fill,
           params.interpolation == AffineInterpolation::Bilinear ? Interpolation::Bilinear
                                                                 : Interpolation::Bicubic,
           params.translate_pct, img);
}

void rand_augment(const RandAugmentOptions& opt, Image& img, Rng& rng) {
  MOKD_CHECK(img.channels == 3, "rand_augment: expected an RGB image, got ", img.channels,
             " channels");
  thread_local std::vector<RandLayer> layers;
  sample_rand_augment(opt, rng, layers);
  for (const RandLayer& l : layers)
    if (l.applied)
      apply_op(l.op, l.magnitude, l.negate, opt.params.fill, l.resample, opt.params.translate_pct,
               img);
}

// ---- colour jitter ----

ColorJitterDraw sample_color_jitter(double brightness, double contrast, double saturation,
                                    Rng& rng) {
  const double jitter[3] = {brightness, contrast, saturation};
  const char* names[3] = {"brightness", "contrast", "saturation"};
  for (int i = 0; i < 3; ++i)
    MOKD_CHECK(std::isfinite(jitter[i]) && jitter[i] >= 0, "color_jitter: ", names[i],
               " must be a finite number >= 0, got ", jitter[i]);
  ColorJitterDraw d;
  for (int i = 3; i > 0; --i) std::swap(d.order[i], d.order[rng.randint(0, i + 1)]);
  for (int i = 0; i < 3; ++i) {
    d.enabled[i] = jitter[i] > 0;  // torchvision: a zero range (1, 1) is no transform at all
    if (d.enabled[i]) d.factor[i] = rng.uniform(std::max(0.0, 1.0 - jitter[i]), 1.0 + jitter[i]);
  }
  return d;
}

void apply_color_jitter(const ColorJitterDraw& draw, Image& img) {
  for (int t : draw.order) {
    if (t > 2 || !draw.enabled[t]) continue;
    if (t == 0) enhance_brightness(img, draw.factor[0]);
    if (t == 1) enhance_contrast(img, draw.factor[1]);
    if (t == 2) enhance_color(img, draw.factor[2]);
  }
}

void color_jitter(double brightness, double contrast, double saturation, Image& img, Rng& rng) {
  apply_color_jitter(sample_color_jitter(brightness, contrast, saturation, rng), img);
}

}  // namespace mokd::data
