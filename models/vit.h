// Vision Transformer / DeiT with timm's parameter names (VisionTransformer and
// VisionTransformerDistilled): patch_embed.proj, cls_token, dist_token, pos_embed, blocks.i.*,
// norm, head, head_dist.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "models/layers.h"
#include "models/model.h"

namespace mokd {

struct ViTConfig {
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t in_chans = 3;
  int64_t num_classes = 1000;
  int64_t embed_dim = 192;
  int64_t depth = 12;
  int64_t num_heads = 3;
  double mlp_ratio = 4.0;
  bool qkv_bias = true;
  bool class_token = true;
  bool distilled = false;      // adds dist_token and head_dist (DeiT)
  float drop_path_rate = 0.f;  // linearly increasing over the blocks, as timm
  float drop_rate = 0.f;       // dropout before the heads (timm's drop_rate)
};

// The state dict a ViT built from cfg has, without building it: each entry's dotted name and
// file-layout shape, in the model's registration order (state_dict() holds exactly these). For
// checking full-size layouts (timm's keys) and counting parameters without allocating weights.
std::vector<std::pair<std::string, Shape>> vit_state_shapes(const ViTConfig& cfg);

// Parameter count of a ViT built from cfg (no allocation; every state entry is a parameter).
int64_t vit_num_parameters(const ViTConfig& cfg);

class VisionTransformer : public Model {
 public:
  explicit VisionTransformer(const ViTConfig& cfg, uint64_t seed = 0);

  // Tokens after the final norm: cls, dist (distilled only), patch_tokens, pooled = mean of the
  // patch tokens.
  Features forward_features(const Tensor& x) override;
  // Plain model: head(cls). Distilled: (head(cls) + head_dist(dist)) / 2, timm's eval output.
  Tensor forward(const Tensor& x) override;
  // Distilled model: {head(cls), head_dist(dist)}, timm's distilled-training output.
  std::pair<Tensor, Tensor> forward_heads(const Tensor& x);
  ModelOutput forward_train(const Tensor& x) override;

  int64_t feature_dim() const override { return cfg_.embed_dim; }
  int64_t num_classes() const override { return cfg_.num_classes; }
  int64_t img_size() const override { return cfg_.img_size; }
  int64_t in_chans() const override { return cfg_.in_chans; }
  bool has_dist_head() const override { return cfg_.distilled; }
  // head.{weight,bias}, and head_dist.{weight,bias} when distilled.
  std::set<std::string> head_names() const override;
  int64_t num_prefix_tokens() const { return prefix_; }
  const ViTConfig& config() const { return cfg_; }

  nn::PatchEmbed* patch_embed;
  Tensor cls_token, dist_token, pos_embed;
  std::vector<nn::Block*> blocks;
  nn::LayerNorm* norm;
  nn::Linear* head;
  nn::Linear* head_dist = nullptr;

 private:
  Tensor tokens(const Tensor& x);  // [B, prefix + N, D] after the final norm
  Features split(const Tensor& t) const;
  Tensor head_in(const Tensor& t);  // head dropout
  ViTConfig cfg_;
  int64_t prefix_ = 0;
};

}  // namespace mokd
