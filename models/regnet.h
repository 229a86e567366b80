// RegNet-Y with timm's parameter names (stem.{conv,bn}, s1..s4.b1..bN.{conv1,conv2,se.fc1,se.fc2,
// conv3,downsample}.{conv,bn}, head.fc): grouped-conv bottlenecks with squeeze-excitation after
// the 3x3 conv, stride 2 in the stem and in the first block of every stage.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "models/layers.h"
#include "models/model.h"

namespace mokd {

// Stage widths and depths are the instantiated values of timm's model (not the w0/wa/wm
// generator), so a registry entry reads like timm's printed architecture.
struct RegNetConfig {
  int64_t stem_width = 32;
  std::array<int64_t, 4> depths = {2, 4, 11, 1};           // blocks per stage
  std::array<int64_t, 4> widths = {224, 448, 1232, 3024};  // output channels per stage
  int64_t group_size = 112;  // channels per group of the 3x3 conv (capped at the stage's mid width)
  double bottle_ratio = 1.0;  // mid channels = round(width * bottle_ratio)
  double se_ratio = 0.25;     // SE reduction = round(block INPUT channels * se_ratio); 0: no SE
  int64_t num_classes = 1000;
  int64_t in_chans = 3;
  int64_t img_size = 224;      // nominal input size (the network accepts any size)
  float drop_path_rate = 0.f;  // linearly increasing over all blocks, as timm
  float drop_rate = 0.f;       // dropout before head.fc
  bool zero_init_last = true;  // conv3's BN starts at gamma 0 (timm's default)
};

int64_t regnet_num_parameters(const RegNetConfig& cfg);

namespace nn {

// timm's ConvNormAct without padding choices: conv (no bias, "same" padding) -> BN -> optional
// ReLU.
class ConvBnAct : public Module {
 public:
  ConvBnAct(int64_t in, int64_t out, int kernel, int stride, int groups, bool act, Generator& gen);
  Tensor forward(const Tensor& x);
  bool act;
  Conv2d* conv;
  BatchNorm2d* bn;
};

// Squeeze-excitation: x * sigmoid(fc2(relu(fc1(mean_hw(x))))), fc1/fc2 1x1 convs with bias.
class SqueezeExcite : public Module {
 public:
  SqueezeExcite(int64_t channels, int64_t reduced, Generator& gen);
  Tensor forward(const Tensor& x) const;
  Conv2d* fc1;
  Conv2d* fc2;
};

// RegNet bottleneck: conv1 1x1 -> conv2 3x3 grouped (stride) -> se -> conv3 1x1 (no act), then
// relu(drop_path(h) + shortcut); the shortcut is downsample (1x1 conv with the stride + BN) when
// the stride or the channel count changes.
class RegBottleneck : public Module {
 public:
  RegBottleneck(int64_t in, int64_t out, int stride, int64_t group_size, double bottle_ratio,
                double se_ratio, float drop_path, bool zero_init_last, Generator& gen);
  Tensor forward(const Tensor& x, Generator& dropout_gen);
  float drop_path_rate;
  ConvBnAct *conv1, *conv2, *conv3;
  SqueezeExcite* se = nullptr;
  ConvBnAct* downsample = nullptr;
};

}  // namespace nn

class RegNet : public Model {
 public:
  explicit RegNet(const RegNetConfig& cfg, uint64_t seed = 0);
  // pooled = global average of the last stage [B, C] (timm's final_conv is Identity for RegNet-Y);
  // the other fields are undefined.
  Features forward_features(const Tensor& x) override;
  Tensor forward(const Tensor& x) override;
  ModelOutput forward_train(const Tensor& x) override;
  int64_t feature_dim() const override { return num_features_; }
  int64_t num_classes() const override { return cfg_.num_classes; }
  int64_t img_size() const override { return cfg_.img_size; }
  int64_t in_chans() const override { return cfg_.in_chans; }
  int64_t fold_batch_norm() override;
  const RegNetConfig& config() const { return cfg_; }
  std::set<std::string> head_names() const override { return {"head.fc.weight", "head.fc.bias"}; }

  nn::ConvBnAct* stem;
  std::vector<std::vector<nn::RegBottleneck*>> stages;
  nn::Linear* fc;  // "head.fc"

 private:
  RegNetConfig cfg_;
  int64_t num_features_ = 0;
};

}  // namespace mokd
