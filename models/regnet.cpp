// RegNet-Y: stem, grouped bottlenecks with squeeze-excitation, and the classifier, with timm's
// names.
#include "models/regnet.h"

#include <algorithm>
#include <cmath>

namespace mokd {

namespace {

// Python's int(round(v)): halves go to the even neighbour (nearbyint in the default rounding mode).
int64_t py_round(double v) { return static_cast<int64_t>(std::nearbyint(v)); }

int64_t mid_channels(int64_t out, double bottle_ratio) {
  return py_round(static_cast<double>(out) * bottle_ratio);
}

// timm caps the group size at the stage's bottleneck width.
int64_t stage_group_size(int64_t group_size, int64_t mid) { return std::min(group_size, mid); }

// SE reduction width from the block's INPUT channels; timm's SEModule falls back to
// make_divisible(mid / 16, 8) when that rounds to 0.
int64_t se_channels(int64_t in, int64_t mid, double se_ratio) {
  const int64_t r = py_round(static_cast<double>(in) * se_ratio);
  if (r > 0) return r;
  return std::max<int64_t>(8, static_cast<int64_t>(static_cast<double>(mid) / 16.0 + 4.0) / 8 * 8);
}

// sigmoid(z) = softmax([0, z])[1] = 1 / (1 + exp(-z)), from existing differentiable ops and
// stable for any z (1 / (1 + exp(-z)) overflows exp for z < -88 and its backward then gives NaN).
Tensor sigmoid_via_softmax(const Tensor& z) {
  const Shape s = z.shape();
  Shape s1 = s;
  s1.push_back(1);
  Tensor z1 = reshape(z, s1);
  Tensor zero = Tensor::zeros(s1, z.dtype(), z.device());
  Tensor p = softmax(concat({zero, z1}, static_cast<int64_t>(s.size())), -1);
  return reshape(narrow(p, static_cast<int64_t>(s.size()), 1, 1), s);
}

}  // namespace

int64_t regnet_num_parameters(const RegNetConfig& c) {
  auto conv = [](int64_t i, int64_t o, int64_t k, int64_t groups) {
    return o * (i / groups) * k * k;
  };
  auto bn = [](int64_t ch) { return 2 * ch; };
  int64_t p = conv(c.in_chans, c.stem_width, 3, 1) + bn(c.stem_width);
  int64_t in = c.stem_width;
  for (int s = 0; s < 4; ++s) {
    const int64_t out = c.widths[s], mid = mid_channels(out, c.bottle_ratio);
    const int64_t groups = mid / stage_group_size(c.group_size, mid);
    for (int64_t b = 0; b < c.depths[s]; ++b) {
      const int stride = b == 0 ? 2 : 1;
      p += conv(in, mid, 1, 1) + bn(mid) + conv(mid, mid, 3, groups) + bn(mid) +
           conv(mid, out, 1, 1) + bn(out);
      if (c.se_ratio > 0) {
        const int64_t r = se_channels(in, mid, c.se_ratio);
        p += mid * r + r + r * mid + mid;
      }
      if (stride != 1 || in != out) p += conv(in, out, 1, 1) + bn(out);
      in = out;
    }
  }
  return p + in * c.num_classes + c.num_classes;
}

namespace nn {

ConvBnAct::ConvBnAct(int64_t in, int64_t out, int kernel, int stride, int groups, bool act_,
                     Generator& gen)
    : act(act_) {
  conv = &register_module(
      "conv", std::make_unique<Conv2d>(in, out, kernel, stride, (kernel - 1) / 2, false, gen,
                                       ConvInit::KaimingFanOut, groups));
  // timm's _init_weights: normal(0, sqrt(2 / fan_out)) with fan_out = k * k * out / groups; the
  // Conv2d default omits the groups, so grouped convs are redrawn.
  if (groups > 1)
    normal_(conv->weight, 0.f,
            std::sqrt(2.f * static_cast<float>(groups) / static_cast<float>(kernel * kernel * out)),
            gen);
  bn = &register_module("bn", std::make_unique<BatchNorm2d>(out));  // eps 1e-5, momentum 0.1
}

Tensor ConvBnAct::forward(const Tensor& x) {
  if (bn->folded()) return conv->forward_bias_act(x, nullptr, act);  // a frozen teacher's
  return act ? bn->forward_relu(conv->forward(x)) : bn->forward(conv->forward(x));
}

SqueezeExcite::SqueezeExcite(int64_t channels, int64_t reduced, Generator& gen) {
  // Kaiming fan-out weights and zero biases, as timm's _init_weights for every nn.Conv2d.
  fc1 = &register_module("fc1", std::make_unique<Conv2d>(channels, reduced, 1, 1, 0, true, gen));
  fc2 = &register_module("fc2", std::make_unique<Conv2d>(reduced, channels, 1, 1, 0, true, gen));
}

Tensor SqueezeExcite::forward(const Tensor& x) const {
  const int64_t b = x.size(0), c = x.size(3);
  Tensor s = reshape(global_avg_pool2d(x), {b, 1, 1, c});
  s = fc2->forward(relu(fc1->forward(s)));
  Tensor gate = reshape(sigmoid_via_softmax(reshape(s, {b, c})), {b, 1, 1, c});
  return mul(x, gate);  // broadcast over H, W
}

RegBottleneck::RegBottleneck(int64_t in, int64_t out, int stride, int64_t group_size,
                             double bottle_ratio, double se_ratio, float dp, bool zero_init_last,
                             Generator& gen)
    : drop_path_rate(dp) {
  const int64_t mid = mid_channels(out, bottle_ratio);
  const int64_t gs = stage_group_size(group_size, mid);
  MOKD_CHECK(mid > 0 && gs > 0 && mid % gs == 0, "RegNet: bottleneck width ", mid, " (width ", out,
             " x bottle_ratio ", bottle_ratio, ") must be a positive multiple of group_size ", gs);
  const int groups = static_cast<int>(mid / gs);
  conv1 = &register_module("conv1", std::make_unique<ConvBnAct>(in, mid, 1, 1, 1, true, gen));
  conv2 = &register_module("conv2",
                           std::make_unique<ConvBnAct>(mid, mid, 3, stride, groups, true, gen));
  if (se_ratio > 0)
    se = &register_module(
        "se", std::make_unique<SqueezeExcite>(mid, se_channels(in, mid, se_ratio), gen));
  conv3 = &register_module("conv3", std::make_unique<ConvBnAct>(mid, out, 1, 1, 1, false, gen));
  if (zero_init_last) conv3->bn->weight.fill_(0.0);
  if (stride != 1 || in != out)
    downsample = &register_module("downsample",
                                  std::make_unique<ConvBnAct>(in, out, 1, stride, 1, false, gen));
}

Tensor RegBottleneck::forward(const Tensor& x, Generator& gen) {
  Tensor h = conv2->forward(conv1->forward(x));
  if (se) h = se->forward(h);
  h = conv3->forward(h);
  if (drop_path_rate > 0.f) h = drop_path(h, drop_path_rate, is_training(), gen);
  Tensor sc = downsample ? downsample->forward(x) : x;
  return relu(add(h, sc));
}

}  // namespace nn

RegNet::RegNet(const RegNetConfig& cfg, uint64_t seed) : Model(seed), cfg_(cfg) {
  MOKD_CHECK(cfg.num_classes > 0 && cfg.in_chans > 0 && cfg.stem_width > 0 && cfg.group_size > 0,
             "RegNet: num_classes, in_chans, stem_width and group_size must be positive, got ",
             cfg.num_classes, ", ", cfg.in_chans, ", ", cfg.stem_width, ", ", cfg.group_size);
  MOKD_CHECK(cfg.bottle_ratio > 0 && cfg.se_ratio >= 0,
             "RegNet: bottle_ratio must be positive and ", "se_ratio non-negative, got ",
             cfg.bottle_ratio, " and ", cfg.se_ratio);
  for (int s = 0; s < 4; ++s)
    MOKD_CHECK(cfg.depths[s] > 0 && cfg.widths[s] > 0, "RegNet: stage ", s + 1,
               " needs at least one block and a positive width, got depth ", cfg.depths[s],
               " width ", cfg.widths[s]);
  Generator gen(seed, Stream::Init);
  stem = &register_module(
      "stem", std::make_unique<nn::ConvBnAct>(cfg.in_chans, cfg.stem_width, 3, 2, 1, true, gen));
  int64_t total = 0;
  for (auto n : cfg.depths) total += n;
  int64_t idx = 0, in = cfg.stem_width;
  for (int s = 0; s < 4; ++s) {
    // Names built with += : GCC 12's -Wrestrict misfires on "s" + std::to_string(...).
    std::string stage_name = "s";
    stage_name += std::to_string(s + 1);
    auto& stage = register_module(stage_name, std::make_unique<nn::Module>());
    stages.emplace_back();
    for (int64_t b = 0; b < cfg.depths[s]; ++b, ++idx) {
      // timm: linspace(0, drop_path_rate, total blocks), split by stage.
      const float dp =
          total > 1 ? cfg.drop_path_rate * static_cast<float>(idx) / static_cast<float>(total - 1)
                    : 0.f;
      std::string block_name = "b";
      block_name += std::to_string(b + 1);
      stages.back().push_back(&stage.register_module(
          block_name, std::make_unique<nn::RegBottleneck>(
                          in, cfg.widths[s], b == 0 ? 2 : 1, cfg.group_size, cfg.bottle_ratio,
                          cfg.se_ratio, dp, cfg.zero_init_last, gen)));
      in = cfg.widths[s];
    }
  }
  num_features_ = in;
  auto& head = register_module("head", std::make_unique<nn::Module>());
  fc = &head.register_module("fc", std::make_unique<nn::Linear>(in, cfg.num_classes, true, gen));
  normal_(fc->weight, 0.f, 0.01f, gen);  // timm's _init_weights: N(0, 0.01), zero bias
}

int64_t RegNet::fold_batch_norm() {
  auto fold = [](nn::ConvBnAct* c) { nn::fold_batch_norm_into(*c->conv, *c->bn); };
  fold(stem);
  int64_t n = 1;
  for (auto& stage : stages) {
    for (nn::RegBottleneck* b : stage) {
      for (nn::ConvBnAct* c : {b->conv1, b->conv2, b->conv3}) fold(c);
      n += 3;
      if (b->downsample) {
        fold(b->downsample);
        ++n;
      }
    }
  }
  return n;
}

Features RegNet::forward_features(const Tensor& x) {
  MOKD_CHECK(x.dim() == 4 && x.size(3) == cfg_.in_chans, "RegNet: input must be [B, H, W, ",
             cfg_.in_chans, "] (NHWC), got ", x.str());
  Tensor h = stem->forward(x);
  for (auto& stage : stages)
    for (auto* b : stage) h = b->forward(h, dropout_generator());
  Features f;
  f.pooled = global_avg_pool2d(h);
  return f;
}

ModelOutput RegNet::forward_train(const Tensor& x) {
  ModelOutput o;
  o.features = forward_features(x);
  o.logits =
      nn::pooled_head(o.features.pooled, cfg_.drop_rate, is_training(), dropout_generator(), *fc);
  return o;
}

Tensor RegNet::forward(const Tensor& x) { return forward_train(x).logits; }

}  // namespace mokd
