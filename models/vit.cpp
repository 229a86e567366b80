// Vision Transformer / DeiT: timm-named parameters, prefix tokens, blocks, heads.
#include "models/vit.h"

namespace mokd {

std::vector<std::pair<std::string, Shape>> vit_state_shapes(const ViTConfig& c) {
  MOKD_CHECK(c.patch_size > 0 && c.img_size % c.patch_size == 0, "vit_state_shapes: img_size ",
             c.img_size, " must be a multiple of patch_size ", c.patch_size);
  const int64_t D = c.embed_dim, H = static_cast<int64_t>(D * c.mlp_ratio);
  const int64_t g = c.img_size / c.patch_size;
  const int64_t prefix = (c.class_token ? 1 : 0) + (c.distilled ? 1 : 0);
  std::vector<std::pair<std::string, Shape>> out;
  auto linear = [&](const std::string& name, int64_t in, int64_t o, bool bias) {
    out.emplace_back(name + ".weight", Shape{o, in});
    if (bias) out.emplace_back(name + ".bias", Shape{o});
  };
  auto norm = [&](const std::string& name) {
    out.emplace_back(name + ".weight", Shape{D});
    out.emplace_back(name + ".bias", Shape{D});
  };
  // The model's own parameters come before its children's (Module::named_parameters).
  if (c.class_token) out.emplace_back("cls_token", Shape{1, 1, D});
  if (c.distilled) out.emplace_back("dist_token", Shape{1, 1, D});
  out.emplace_back("pos_embed", Shape{1, g * g + prefix, D});
  out.emplace_back("patch_embed.proj.weight", Shape{D, c.in_chans, c.patch_size, c.patch_size});
  out.emplace_back("patch_embed.proj.bias", Shape{D});
  for (int64_t i = 0; i < c.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    norm(b + "norm1");
    linear(b + "attn.qkv", D, 3 * D, c.qkv_bias);
    linear(b + "attn.proj", D, D, true);
    norm(b + "norm2");
    linear(b + "mlp.fc1", D, H, true);
    linear(b + "mlp.fc2", H, D, true);
  }
  norm("norm");
  linear("head", D, c.num_classes, true);
  if (c.distilled) linear("head_dist", D, c.num_classes, true);
  return out;
}

int64_t vit_num_parameters(const ViTConfig& c) {
  int64_t p = 0;
  for (const auto& [name, shape] : vit_state_shapes(c)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    p += n;
  }
  return p;
}

VisionTransformer::VisionTransformer(const ViTConfig& cfg, uint64_t seed) : Model(seed), cfg_(cfg) {
  MOKD_CHECK(cfg.num_classes > 0 && cfg.depth > 0 && cfg.embed_dim > 0,
             "VisionTransformer: num_classes, depth and embed_dim must be positive");
  MOKD_CHECK(!cfg.distilled || cfg.class_token,
             "VisionTransformer: a distilled model needs the class token");
  Generator gen(seed, Stream::Init);
  const int64_t D = cfg.embed_dim;
  prefix_ = (cfg.class_token ? 1 : 0) + (cfg.distilled ? 1 : 0);
  patch_embed = &register_module(
      "patch_embed",
      std::make_unique<nn::PatchEmbed>(cfg.img_size, cfg.patch_size, cfg.in_chans, D, gen));
  // timm: pos_embed and dist_token trunc-normal(.02), cls_token normal(1e-6).
  if (cfg.class_token) {
    Tensor t = Tensor::empty({1, 1, D});
    normal_(t, 0.f, 1e-6f, gen);
    cls_token = register_parameter("cls_token", t);
  }
  if (cfg.distilled) {
    Tensor t = Tensor::empty({1, 1, D});
    nn::trunc_normal_(t, 0.02f, gen);
    dist_token = register_parameter("dist_token", t);
  }
  {
    Tensor t = Tensor::empty({1, patch_embed->num_patches + prefix_, D});
    nn::trunc_normal_(t, 0.02f, gen);
    pos_embed = register_parameter("pos_embed", t);
  }
  auto& blocks_mod = register_module("blocks", std::make_unique<nn::Module>());
  for (int64_t i = 0; i < cfg.depth; ++i) {
    float dp = cfg.depth > 1
                   ? cfg.drop_path_rate * static_cast<float>(i) / static_cast<float>(cfg.depth - 1)
                   : cfg.drop_path_rate;
    blocks.push_back(&blocks_mod.register_module(
        std::to_string(i),
        std::make_unique<nn::Block>(D, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, dp, gen)));
  }
  norm = &register_module("norm", std::make_unique<nn::LayerNorm>(D));
  head = &register_module("head", std::make_unique<nn::Linear>(D, cfg.num_classes, true, gen));
  if (cfg.distilled)
    head_dist =
        &register_module("head_dist", std::make_unique<nn::Linear>(D, cfg.num_classes, true, gen));
}

std::set<std::string> VisionTransformer::head_names() const {
  if (!cfg_.distilled) return {"head.weight", "head.bias"};
  return {"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"};
}

Tensor VisionTransformer::tokens(const Tensor& x) {
  Tensor p = patch_embed->forward(x);  // [B, N, D]
  const int64_t B = p.size(0), D = cfg_.embed_dim;
  std::vector<Tensor> parts;
  // Broadcast the [1, 1, D] tokens over the batch; the add's backward sums them back.
  Tensor zeros = Tensor::zeros({B, 1, D}, p.dtype(), p.device());
  if (cfg_.class_token) parts.push_back(add(zeros, cls_token));
  if (cfg_.distilled) parts.push_back(add(zeros, dist_token));
  parts.push_back(p);
  Tensor t = parts.size() > 1 ? concat(parts, 1) : p;
  t = add(t, pos_embed);
  for (auto* b : blocks) t = b->forward(t, dropout_generator());
  return norm->forward(t);
}

Features VisionTransformer::split(const Tensor& t) const {
  const int64_t B = t.size(0), D = cfg_.embed_dim, N = t.size(1) - prefix_;
  Features f;
  int64_t at = 0;
  if (cfg_.class_token) f.cls = reshape(narrow(t, 1, at++, 1), {B, D});
  if (cfg_.distilled) f.dist = reshape(narrow(t, 1, at++, 1), {B, D});
  f.patch_tokens = prefix_ > 0 ? narrow(t, 1, prefix_, N) : t;
  f.pooled = mean(f.patch_tokens, {1});
  return f;
}

Features VisionTransformer::forward_features(const Tensor& x) { return split(tokens(x)); }

Tensor VisionTransformer::head_in(const Tensor& t) {
  return cfg_.drop_rate > 0.f ? dropout(t, cfg_.drop_rate, is_training(), dropout_generator()) : t;
}

ModelOutput VisionTransformer::forward_train(const Tensor& x) {
  ModelOutput o;
  o.features = forward_features(x);
  // Without a class token timm pools by the mean of the tokens.
  o.logits = head->forward(head_in(cfg_.class_token ? o.features.cls : o.features.pooled));
  if (cfg_.distilled) o.dist_logits = head_dist->forward(head_in(o.features.dist));
  return o;
}

std::pair<Tensor, Tensor> VisionTransformer::forward_heads(const Tensor& x) {
  ModelOutput o = forward_train(x);
  return {o.logits, o.dist_logits};
}

Tensor VisionTransformer::forward(const Tensor& x) {
  ModelOutput o = forward_train(x);
  if (!cfg_.distilled) return o.logits;
  return scale(add(o.logits, o.dist_logits), 0.5f);
}

}  // namespace mokd
