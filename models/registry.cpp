// Model registry: the DeiT, ViT, ResNet and RegNet-Y families of timm plus small Fashion-MNIST
// variants.
#include "models/registry.h"

#include <cstdio>

namespace mokd {

namespace {

ModelSpec vit(const std::string& name, const std::string& desc, int64_t img, int64_t patch,
              int64_t in, int64_t classes, int64_t dim, int64_t depth, int64_t heads,
              bool distilled) {
  ModelSpec s;
  s.name = name;
  s.description = desc;
  s.kind = ModelSpec::Kind::ViT;
  s.vit.img_size = img;
  s.vit.patch_size = patch;
  s.vit.in_chans = in;
  s.vit.num_classes = classes;
  s.vit.embed_dim = dim;
  s.vit.depth = depth;
  s.vit.num_heads = heads;
  s.vit.distilled = distilled;
  return s;
}

ModelSpec resnet(const std::string& name, const std::string& desc, ResNetBlock block,
                 std::array<int64_t, 4> layers, std::array<int64_t, 4> channels, int64_t stem,
                 int64_t in, int64_t classes, int64_t img, bool small_stem) {
  ModelSpec s;
  s.name = name;
  s.description = desc;
  s.kind = ModelSpec::Kind::ResNet;
  s.resnet.block = block;
  s.resnet.layers = layers;
  s.resnet.channels = channels;
  s.resnet.stem_width = stem;
  s.resnet.in_chans = in;
  s.resnet.num_classes = classes;
  s.resnet.img_size = img;
  s.resnet.small_stem = small_stem;
  return s;
}

// Depths, widths and group sizes as timm instantiates them (read off timm.create_model(name)).
ModelSpec regnet(const std::string& name, const std::string& desc, std::array<int64_t, 4> depths,
                 std::array<int64_t, 4> widths, int64_t group_size, int64_t stem, int64_t in,
                 int64_t classes, int64_t img) {
  ModelSpec s;
  s.name = name;
  s.description = desc;
  s.kind = ModelSpec::Kind::RegNet;
  s.regnet.depths = depths;
  s.regnet.widths = widths;
  s.regnet.group_size = group_size;
  s.regnet.stem_width = stem;
  s.regnet.in_chans = in;
  s.regnet.num_classes = classes;
  s.regnet.img_size = img;
  return s;
}

std::vector<ModelSpec> make_specs() {
  const std::array<int64_t, 4> wide = {64, 128, 256, 512};
  const auto B = ResNetBlock::Basic, K = ResNetBlock::Bottleneck;
  return {
      vit("deit_tiny_patch16_224", "DeiT-Ti (timm), 224px, patch 16, dim 192, depth 12", 224, 16, 3,
          1000, 192, 12, 3, false),
      vit("deit_small_patch16_224", "DeiT-S (timm), 224px, patch 16, dim 384, depth 12", 224, 16, 3,
          1000, 384, 12, 6, false),
      vit("deit_base_patch16_224", "DeiT-B (timm), 224px, patch 16, dim 768, depth 12", 224, 16, 3,
          1000, 768, 12, 12, false),
      vit("deit_tiny_distilled_patch16_224", "DeiT-Ti with distillation token and head (timm)", 224,
          16, 3, 1000, 192, 12, 3, true),
      vit("deit_small_distilled_patch16_224", "DeiT-S with distillation token and head (timm)", 224,
          16, 3, 1000, 384, 12, 6, true),
      vit("deit_base_distilled_patch16_224", "DeiT-B with distillation token and head (timm)", 224,
          16, 3, 1000, 768, 12, 12, true),
      vit("vit_tiny_patch16_224", "ViT-Ti/16 (timm), 224px, dim 192, depth 12, 3 heads", 224, 16, 3,
          1000, 192, 12, 3, false),
      vit("vit_tiny_patch16_384", "ViT-Ti/16 (timm), 384px, dim 192, depth 12, 3 heads", 384, 16, 3,
          1000, 192, 12, 3, false),
      vit("vit_small_patch16_224", "ViT-S/16 (timm), 224px, dim 384, depth 12, 6 heads", 224, 16, 3,
          1000, 384, 12, 6, false),
      vit("vit_small_patch16_384", "ViT-S/16 (timm), 384px, dim 384, depth 12, 6 heads", 384, 16, 3,
          1000, 384, 12, 6, false),
      vit("vit_small_patch32_224", "ViT-S/32 (timm), 224px, dim 384, depth 12, 6 heads", 224, 32, 3,
          1000, 384, 12, 6, false),
      vit("vit_small_patch32_384", "ViT-S/32 (timm), 384px, dim 384, depth 12, 6 heads", 384, 32, 3,
          1000, 384, 12, 6, false),
      vit("vit_base_patch16_224", "ViT-B/16 (timm), 224px, dim 768, depth 12, 12 heads", 224, 16, 3,
          1000, 768, 12, 12, false),
      vit("vit_base_patch16_384", "ViT-B/16 (timm), 384px, dim 768, depth 12, 12 heads", 384, 16, 3,
          1000, 768, 12, 12, false),
      vit("vit_base_patch32_224", "ViT-B/32 (timm), 224px, dim 768, depth 12, 12 heads", 224, 32, 3,
          1000, 768, 12, 12, false),
      vit("vit_base_patch32_384", "ViT-B/32 (timm), 384px, dim 768, depth 12, 12 heads", 384, 32, 3,
          1000, 768, 12, 12, false),
      vit("vit_large_patch16_224", "ViT-L/16 (timm), 224px, dim 1024, depth 24, 16 heads", 224, 16,
          3, 1000, 1024, 24, 16, false),
      vit("vit_large_patch16_384", "ViT-L/16 (timm), 384px, dim 1024, depth 24, 16 heads", 384, 16,
          3, 1000, 1024, 24, 16, false),
      vit("vit_large_patch32_384", "ViT-L/32 (timm), 384px, dim 1024, depth 24, 16 heads", 384, 32,
          3, 1000, 1024, 24, 16, false),
      resnet("resnet18", "ResNet-18 (timm/torchvision), BasicBlock [2,2,2,2]", B, {2, 2, 2, 2},
             wide, 64, 3, 1000, 224, false),
      resnet("resnet34", "ResNet-34, BasicBlock [3,4,6,3]", B, {3, 4, 6, 3}, wide, 64, 3, 1000, 224,
             false),
      resnet("resnet50", "ResNet-50, Bottleneck [3,4,6,3]", K, {3, 4, 6, 3}, wide, 64, 3, 1000, 224,
             false),
      resnet("resnet101", "ResNet-101, Bottleneck [3,4,23,3]", K, {3, 4, 23, 3}, wide, 64, 3, 1000,
             224, false),
      resnet("resnet152", "ResNet-152, Bottleneck [3,8,36,3]", K, {3, 8, 36, 3}, wide, 64, 3, 1000,
             224, false),
      regnet("regnety_008",
             "RegNetY-800MF (timm), depths [1,3,8,2], widths 64-768, group 16, SE 0.25",
             {1, 3, 8, 2}, {64, 128, 320, 768}, 16, 32, 3, 1000, 224),
      regnet("regnety_016", "RegNetY-1.6GF, depths [2,6,17,2], widths 48-888, group 24, SE 0.25",
             {2, 6, 17, 2}, {48, 120, 336, 888}, 24, 32, 3, 1000, 224),
      regnet("regnety_040", "RegNetY-4GF, depths [2,6,12,2], widths 128-1088, group 64, SE 0.25",
             {2, 6, 12, 2}, {128, 192, 512, 1088}, 64, 32, 3, 1000, 224),
      regnet(
          "regnety_160",
          "RegNetY-16GF (DeiT's teacher), depths [2,4,11,1], widths 224-3024, group 112, SE 0.25",
          {2, 4, 11, 1}, {224, 448, 1232, 3024}, 112, 32, 3, 1000, 224),
      vit("vit_fmnist_tiny", "Fashion-MNIST ViT: 28px gray, patch 4, dim 96, depth 6, 3 heads", 28,
          4, 1, 10, 96, 6, 3, false),
      vit("vit_fmnist_tiny_distilled", "vit_fmnist_tiny with distillation token and head", 28, 4, 1,
          10, 96, 6, 3, true),
      vit("vit_fmnist_micro",
          "Fashion-MNIST ViT for quick CPU runs: 28px gray, patch 4, dim 64, depth 4, 4 heads", 28,
          4, 1, 10, 64, 4, 4, false),
      vit("vit_fmnist_micro_distilled", "vit_fmnist_micro with distillation token and head", 28, 4,
          1, 10, 64, 4, 4, true),
      resnet("resnet_fmnist_small",
             "Fashion-MNIST ResNet: small stem (64 ch, as timm), BasicBlock [1,1,1,1], widths "
             "16-128, gray",
             B, {1, 1, 1, 1}, {16, 32, 64, 128}, 64, 1, 10, 28, true),
      resnet("resnet18_fmnist",
             "ResNet-18 with the small stem (3x3 s1, no pool), 28px gray, 10 classes", B,
             {2, 2, 2, 2}, wide, 64, 1, 10, 28, true),
      regnet("regnety_fmnist_small",
             "Fashion-MNIST RegNet-Y: 28px gray, stem 16, depths [1,1,2,1], widths 16-128, group "
             "8, SE 0.25",
             {1, 1, 2, 1}, {16, 32, 64, 128}, 8, 16, 1, 10, 28),
  };
}

}  // namespace

int64_t ModelSpec::num_parameters() const {
  switch (kind) {
    case Kind::ViT:
      return vit_num_parameters(vit);
    case Kind::ResNet:
      return resnet_num_parameters(resnet);
    case Kind::RegNet:
      return regnet_num_parameters(regnet);
  }
  return 0;
}

const std::vector<ModelSpec>& model_specs() {
  static const std::vector<ModelSpec> specs = make_specs();
  return specs;
}

ModelSpec model_spec(const std::string& name, const ModelOverrides& o) {
  for (const auto& s0 : model_specs()) {
    if (s0.name != name) continue;
    ModelSpec s = s0;
    if (s.kind == ModelSpec::Kind::ViT) {
      if (o.num_classes) s.vit.num_classes = *o.num_classes;
      if (o.img_size) s.vit.img_size = *o.img_size;
      if (o.in_chans) s.vit.in_chans = *o.in_chans;
      if (o.drop_path_rate) s.vit.drop_path_rate = *o.drop_path_rate;
      if (o.drop_rate) s.vit.drop_rate = *o.drop_rate;
    } else if (s.kind == ModelSpec::Kind::RegNet) {
      if (o.num_classes) s.regnet.num_classes = *o.num_classes;
      if (o.img_size) s.regnet.img_size = *o.img_size;
      if (o.in_chans) s.regnet.in_chans = *o.in_chans;
      if (o.drop_path_rate) s.regnet.drop_path_rate = *o.drop_path_rate;
      if (o.drop_rate) s.regnet.drop_rate = *o.drop_rate;
    } else {
      if (o.num_classes) s.resnet.num_classes = *o.num_classes;
      if (o.img_size) s.resnet.img_size = *o.img_size;
      if (o.in_chans) s.resnet.in_chans = *o.in_chans;
      if (o.drop_path_rate) s.resnet.drop_path_rate = *o.drop_path_rate;
      if (o.drop_rate) s.resnet.drop_rate = *o.drop_rate;
    }
    return s;
  }
  std::string known;
  for (const auto& s : model_specs()) known += (known.empty() ? "" : ", ") + s.name;
  MOKD_FAIL("create_model: unknown model '", name, "'; known models: ", known);
}

std::unique_ptr<Model> build_model(const ModelSpec& spec, uint64_t seed) {
  std::unique_ptr<Model> m;
  if (spec.kind == ModelSpec::Kind::ViT)
    m = std::make_unique<VisionTransformer>(spec.vit, seed);
  else if (spec.kind == ModelSpec::Kind::RegNet)
    m = std::make_unique<RegNet>(spec.regnet, seed);
  else
    m = std::make_unique<ResNet>(spec.resnet, seed);
  m->set_name(spec.name);
  return m;
}

std::unique_ptr<Model> create_model(const std::string& name, const ModelOverrides& o) {
  return build_model(model_spec(name, o), o.seed);
}

std::vector<std::pair<std::string, std::string>> list_models() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& s : model_specs()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2fM params", static_cast<double>(s.num_parameters()) / 1e6);
    out.emplace_back(s.name, s.description + ", " + buf);
  }
  return out;
}

}  // namespace mokd
