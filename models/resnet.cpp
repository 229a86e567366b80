// ResNet: stems, BasicBlock/Bottleneck stages and the classifier, with timm's names.
#include "models/resnet.h"

namespace mokd {

int64_t resnet_num_parameters(const ResNetConfig& c) {
  const int64_t e = nn::ResBlock::expansion(c.block);
  auto conv = [](int64_t i, int64_t o, int64_t k) { return i * o * k * k; };
  auto bn = [](int64_t ch) { return 2 * ch; };
  int64_t p = conv(c.in_chans, c.stem_width, c.small_stem ? 3 : 7) + bn(c.stem_width);
  int64_t in = c.stem_width;
  for (int s = 0; s < 4; ++s) {
    const int64_t planes = c.channels[s], out = planes * e;
    for (int64_t b = 0; b < c.layers[s]; ++b) {
      const bool first = b == 0;
      const int stride = (first && s > 0) ? 2 : 1;
      if (c.block == ResNetBlock::Basic)
        p += conv(in, planes, 3) + bn(planes) + conv(planes, planes, 3) + bn(planes);
      else
        p += conv(in, planes, 1) + bn(planes) + conv(planes, planes, 3) + bn(planes) +
             conv(planes, out, 1) + bn(out);
      if (stride != 1 || in != out) p += conv(in, out, 1) + bn(out);
      in = out;
    }
  }
  return p + in * c.num_classes + c.num_classes;
}

namespace nn {

ResBlock::ResBlock(ResNetBlock k, int64_t inplanes, int64_t planes, int stride, float dp,
                   bool zero_init_last, Generator& gen)
    : kind(k), drop_path_rate(dp) {
  const int64_t out = planes * expansion(k);
  BatchNorm2d* last = nullptr;
  if (k == ResNetBlock::Basic) {
    conv1 = &register_module("conv1",
                             std::make_unique<Conv2d>(inplanes, planes, 3, stride, 1, false, gen));
    bn1 = &register_module("bn1", std::make_unique<BatchNorm2d>(planes));
    conv2 =
        &register_module("conv2", std::make_unique<Conv2d>(planes, planes, 3, 1, 1, false, gen));
    bn2 = &register_module("bn2", std::make_unique<BatchNorm2d>(planes));
    last = bn2;
  } else {
    // timm/torchvision v1.5: the stride sits on the 3x3 conv.
    conv1 =
        &register_module("conv1", std::make_unique<Conv2d>(inplanes, planes, 1, 1, 0, false, gen));
    bn1 = &register_module("bn1", std::make_unique<BatchNorm2d>(planes));
    conv2 = &register_module("conv2",
                             std::make_unique<Conv2d>(planes, planes, 3, stride, 1, false, gen));
    bn2 = &register_module("bn2", std::make_unique<BatchNorm2d>(planes));
    conv3 = &register_module("conv3", std::make_unique<Conv2d>(planes, out, 1, 1, 0, false, gen));
    bn3 = &register_module("bn3", std::make_unique<BatchNorm2d>(out));
    last = bn3;
  }
  if (zero_init_last) last->weight.fill_(0.0);
  if (stride != 1 || inplanes != out) {
    auto& ds = register_module("downsample", std::make_unique<Module>());
    down_conv =
        &ds.register_module("0", std::make_unique<Conv2d>(inplanes, out, 1, stride, 0, false, gen));
    down_bn = &ds.register_module("1", std::make_unique<BatchNorm2d>(out));
  }
}

Tensor ResBlock::forward(const Tensor& x, Generator& gen) {
  if (bn1->folded()) {
    // A frozen teacher's block (Model::fold_batch_norm; eval, so no drop-path): every
    // convolution's bias, the residual add and the ReLU in one pass after it.
    const Tensor sc = down_conv ? down_conv->forward_bias_act(x, nullptr, false) : x;
    Tensor h = conv1->forward_bias_act(x, nullptr, true);
    if (kind == ResNetBlock::Basic) return conv2->forward_bias_act(h, &sc, true);
    h = conv2->forward_bias_act(h, nullptr, true);
    return conv3->forward_bias_act(h, &sc, true);
  }
  Tensor h = bn1->forward_relu(conv1->forward(x));
  if (kind == ResNetBlock::Bottleneck) h = bn2->forward_relu(conv2->forward(h));
  BatchNorm2d* last = kind == ResNetBlock::Basic ? bn2 : bn3;
  const Tensor z = (kind == ResNetBlock::Basic ? conv2 : conv3)->forward(h);
  if (drop_path_rate > 0.f && is_training()) {  // drop-path between the batch norm and the sum
    h = drop_path(last->forward(z), drop_path_rate, true, gen);
    const Tensor sc = down_conv ? down_bn->forward(down_conv->forward(x)) : x;
    return relu(add(h, sc));
  }
  // The sum and the ReLU join the last batch norm.
  const Tensor sc = down_conv ? down_bn->forward(down_conv->forward(x)) : x;
  return last->forward_relu(z, &sc);
}

}  // namespace nn

ResNet::ResNet(const ResNetConfig& cfg, uint64_t seed) : Model(seed), cfg_(cfg) {
  MOKD_CHECK(cfg.num_classes > 0 && cfg.in_chans > 0 && cfg.stem_width > 0,
             "ResNet: num_classes, in_chans and stem_width must be positive");
  for (int s = 0; s < 4; ++s)
    MOKD_CHECK(cfg.layers[s] > 0 && cfg.channels[s] > 0, "ResNet: stage ", s + 1,
               " needs at least one block and positive channels, got layers ", cfg.layers[s],
               " channels ", cfg.channels[s]);
  Generator gen(seed, Stream::Init);
  if (cfg.small_stem)
    conv1 = &register_module(
        "conv1", std::make_unique<nn::Conv2d>(cfg.in_chans, cfg.stem_width, 3, 1, 1, false, gen));
  else
    conv1 = &register_module(
        "conv1", std::make_unique<nn::Conv2d>(cfg.in_chans, cfg.stem_width, 7, 2, 3, false, gen));
  bn1 = &register_module("bn1", std::make_unique<nn::BatchNorm2d>(cfg.stem_width));
  int64_t total = 0;
  for (auto n : cfg.layers) total += n;
  int64_t idx = 0, in = cfg.stem_width;
  const int64_t e = nn::ResBlock::expansion(cfg.block);
  for (int s = 0; s < 4; ++s) {
    auto& layer = register_module("layer" + std::to_string(s + 1), std::make_unique<nn::Module>());
    stages.emplace_back();
    for (int64_t b = 0; b < cfg.layers[s]; ++b, ++idx) {
      const int stride = (b == 0 && s > 0) ? 2 : 1;
      const float dp =
          total > 1 ? cfg.drop_path_rate * static_cast<float>(idx) / static_cast<float>(total - 1)
                    : cfg.drop_path_rate;
      stages.back().push_back(&layer.register_module(
          std::to_string(b), std::make_unique<nn::ResBlock>(cfg.block, in, cfg.channels[s], stride,
                                                            dp, cfg.zero_init_last, gen)));
      in = cfg.channels[s] * e;
    }
  }
  num_features_ = in;
  fc = &register_module("fc", std::make_unique<nn::Linear>(in, cfg.num_classes, true, gen,
                                                           nn::LinearInit::TorchDefault));
}

int64_t ResNet::fold_batch_norm() {
  nn::fold_batch_norm_into(*conv1, *bn1);
  int64_t n = 1;
  for (auto& stage : stages) {
    for (nn::ResBlock* b : stage) {
      nn::fold_batch_norm_into(*b->conv1, *b->bn1);
      nn::fold_batch_norm_into(*b->conv2, *b->bn2);
      n += 2;
      if (b->conv3) {
        nn::fold_batch_norm_into(*b->conv3, *b->bn3);
        ++n;
      }
      if (b->down_conv) {
        nn::fold_batch_norm_into(*b->down_conv, *b->down_bn);
        ++n;
      }
    }
  }
  return n;
}

Features ResNet::forward_features(const Tensor& x) {
  MOKD_CHECK(x.dim() == 4 && x.size(3) == cfg_.in_chans, "ResNet: input must be [B, H, W, ",
             cfg_.in_chans, "] (NHWC), got ", x.str());
  Tensor h = bn1->folded() ? conv1->forward_bias_act(x, nullptr, true)
                           : bn1->forward_relu(conv1->forward(x));
  if (!cfg_.small_stem) {
    Pool2dParams p;
    p.kernel_h = p.kernel_w = 3;
    p.stride_h = p.stride_w = 2;
    p.pad_h = p.pad_w = 1;
    h = max_pool2d(h, p);
  }
  for (auto& stage : stages)
    for (auto* b : stage) h = b->forward(h, dropout_generator());
  Features f;
  f.pooled = global_avg_pool2d(h);
  return f;
}

ModelOutput ResNet::forward_train(const Tensor& x) {
  ModelOutput o;
  o.features = forward_features(x);
  o.logits =
      nn::pooled_head(o.features.pooled, cfg_.drop_rate, is_training(), dropout_generator(), *fc);
  return o;
}

Tensor ResNet::forward(const Tensor& x) { return forward_train(x).logits; }

}  // namespace mokd
