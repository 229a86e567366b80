// ResNet with timm/torchvision parameter names (conv1, bn1, layer1..4.i.{conv1,bn1,conv2,bn2,
// conv3,bn3,downsample.0,downsample.1}, fc): BasicBlock and Bottleneck, the standard stem
// (7x7 stride 2 + 3x3 max-pool) or a small-image stem (3x3 stride 1, no pool) for 28-32 px inputs.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

#include "models/layers.h"
#include "models/model.h"

namespace mokd {

enum class ResNetBlock { Basic, Bottleneck };

struct ResNetConfig {
  ResNetBlock block = ResNetBlock::Basic;
  std::array<int64_t, 4> layers = {2, 2, 2, 2};           // blocks per stage
  std::array<int64_t, 4> channels = {64, 128, 256, 512};  // planes per stage (before expansion)
  int64_t stem_width = 64;
  int64_t in_chans = 3;
  int64_t num_classes = 1000;
  int64_t img_size = 224;  // nominal input size (the network accepts any size that fits)
  bool small_stem = false;
  float drop_path_rate = 0.f;  // linearly increasing over all blocks, as timm
  float drop_rate = 0.f;       // dropout before fc
  bool zero_init_last = true;  // last BN of each block starts at gamma 0 (timm's default)
};

int64_t resnet_num_parameters(const ResNetConfig& cfg);

namespace nn {

// Either block kind; conv3/bn3 exist for Bottleneck only, downsample when shape changes.
class ResBlock : public Module {
 public:
  ResBlock(ResNetBlock kind, int64_t inplanes, int64_t planes, int stride, float drop_path,
           bool zero_init_last, Generator& gen);
  Tensor forward(const Tensor& x, Generator& dropout_gen);
  static int64_t expansion(ResNetBlock k) { return k == ResNetBlock::Basic ? 1 : 4; }
  ResNetBlock kind;
  float drop_path_rate;
  Conv2d *conv1, *conv2, *conv3 = nullptr;
  BatchNorm2d *bn1, *bn2, *bn3 = nullptr;
  Conv2d* down_conv = nullptr;
  BatchNorm2d* down_bn = nullptr;
};

}  // namespace nn

class ResNet : public Model {
 public:
  explicit ResNet(const ResNetConfig& cfg, uint64_t seed = 0);
  // pooled = global average of the last stage [B, C]; the other fields are undefined.
  Features forward_features(const Tensor& x) override;
  Tensor forward(const Tensor& x) override;
  ModelOutput forward_train(const Tensor& x) override;
  int64_t feature_dim() const override { return num_features_; }
  int64_t num_classes() const override { return cfg_.num_classes; }
  int64_t img_size() const override { return cfg_.img_size; }
  int64_t in_chans() const override { return cfg_.in_chans; }
  int64_t fold_batch_norm() override;
  const ResNetConfig& config() const { return cfg_; }
  std::set<std::string> head_names() const override { return {"fc.weight", "fc.bias"}; }

  nn::Conv2d* conv1;
  nn::BatchNorm2d* bn1;
  std::vector<std::vector<nn::ResBlock*>> stages;
  nn::Linear* fc;

 private:
  ResNetConfig cfg_;
  int64_t num_features_ = 0;
};

}  // namespace mokd
