// Models: module naming, state dicts (timm names, OIHW convs, strict errors), ViT/DeiT/ResNet/
// RegNet logits and parameter gradients against timm (tools/reference/models.py), registry.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "models/registry.h"
#include "test_util.h"

namespace mokd {
namespace {

using test::load_fixture;
using test::rel_error;

// Entries of a fixture under "prefix." with the prefix removed.
io::TensorMap with_prefix(const io::TensorMap& m, const std::string& prefix) {
  io::TensorMap out;
  for (auto& [k, v] : m)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

// The tiny models' configs come from their fixtures' params ("config": timm's constructor
// arguments; tools/reference/models.py).
ViTConfig tiny_vit(bool distilled) {
  test::Fixture fx(distilled ? "models_deit.safetensors" : "models_vit.safetensors");
  ViTConfig c;
  c.img_size = fx.param_i("config.img_size");
  c.patch_size = fx.param_i("config.patch_size");
  c.in_chans = fx.param_i("config.in_chans");
  c.num_classes = fx.param_i("config.num_classes");
  c.embed_dim = fx.param_i("config.embed_dim");
  c.depth = fx.param_i("config.depth");
  c.num_heads = fx.param_i("config.num_heads");
  c.mlp_ratio = fx.param_d("config.mlp_ratio");
  c.drop_path_rate = fx.param_f("config.drop_path_rate");
  c.distilled = distilled;
  return c;
}

ResNetConfig tiny_resnet(const std::string& fixture = "models_resnet") {
  test::Fixture fx(fixture + ".safetensors");
  ResNetConfig c;
  const std::string block = fx.param_s("config.block");
  if (block != "BasicBlock" && block != "Bottleneck")
    throw Error(fixture + ": unknown block " + block);
  c.block = block == "Bottleneck" ? ResNetBlock::Bottleneck : ResNetBlock::Basic;
  auto layers = fx.param_iv("config.layers"), channels = fx.param_iv("config.channels");
  for (size_t i = 0; i < 4; ++i) c.layers[i] = layers.at(i), c.channels[i] = channels.at(i);
  c.stem_width = fx.param_i("stem_width");  // timm's plain stem is always 64 wide
  c.in_chans = fx.param_i("config.in_chans");
  c.num_classes = fx.param_i("config.num_classes");
  c.img_size = fx.param_i("img_size");
  return c;
}

// What timm instantiates for the fixture's RegNetCfg (depth 5, w0 8, wa 8, wm 1.5, group_size 8,
// se 0.25, stem 8): the "stages" params, depths [1, 1, 2, 1], widths [8, 16, 24, 40] (groups
// [1, 2, 3, 5], SE widths [2, 2, 4, 6, 6] follow from group_size and se_ratio).
RegNetConfig tiny_regnet() {
  test::Fixture fx("models_regnet.safetensors");
  RegNetConfig c;
  c.stem_width = fx.param_i("config.stem_width");
  auto depths = fx.param_iv("stages.depths"), widths = fx.param_iv("stages.widths");
  for (size_t i = 0; i < 4; ++i) c.depths[i] = depths.at(i), c.widths[i] = widths.at(i);
  c.group_size = fx.param_i("config.group_size");
  c.bottle_ratio = fx.param_d("config.bottle_ratio");
  c.se_ratio = fx.param_d("config.se_ratio");
  c.in_chans = fx.param_i("config.in_chans");
  c.num_classes = fx.param_i("config.num_classes");
  c.img_size = fx.param_i("img_size");
  return c;
}

// mokd's state dict has exactly timm's names and shapes.
void expect_same_names_and_shapes(const nn::Module& m, const io::TensorMap& timm_sd) {
  io::TensorMap sd = m.state_dict();
  std::set<std::string> a, b;
  for (auto& [k, v] : sd) a.insert(k);
  for (auto& [k, v] : timm_sd) b.insert(k);
  for (auto& k : a) EXPECT_TRUE(b.count(k)) << "mokd has '" << k << "' that timm lacks";
  for (auto& k : b) EXPECT_TRUE(a.count(k)) << "timm has '" << k << "' that mokd lacks";
  for (auto& [k, v] : sd) {
    auto it = timm_sd.find(k);
    if (it != timm_sd.end()) EXPECT_EQ(shape_str(v.shape()), shape_str(it->second.shape())) << k;
  }
}

// Returns the largest relative error seen.
double expect_grads(const nn::Module& m, const io::TensorMap& grads, double tol) {
  size_t n = 0;
  double worst = 0;
  for (auto& [name, p] : m.named_parameters()) {
    auto it = grads.find("grad." + name);
    if (it == grads.end()) {
      ADD_FAILURE() << "no reference gradient for " << name;
      return INFINITY;
    }
    if (!p.grad().defined()) {
      ADD_FAILURE() << name << " got no gradient";
      return INFINITY;
    }
    // Compare in file layout (conv weights OIHW).
    Tensor g = p.grad();
    if (g.dim() == 4) g = g.permute_view({0, 3, 1, 2}).contiguous();
    const double e = rel_error(g, it->second);
    EXPECT_LT(e, tol) << "gradient of " << name;
    worst = std::max(worst, e);
    ++n;
  }
  EXPECT_EQ(n, grads.size());
  return worst;
}

TEST(Models, NamesFollowTimm) {
  VisionTransformer vit(tiny_vit(true));
  std::set<std::string> names;
  for (auto& [k, v] : vit.named_parameters()) names.insert(k);
  for (const char* k :
       {"blocks.1.attn.qkv.weight", "blocks.0.mlp.fc2.bias", "patch_embed.proj.weight", "cls_token",
        "dist_token", "pos_embed", "norm.weight", "head_dist.bias"})
    EXPECT_TRUE(names.count(k)) << k;
  EXPECT_EQ(shape_str(vit.pos_embed.shape()), "[1, 18, 32]");  // 16 patches + 2 prefix tokens

  ResNet r(tiny_resnet());
  std::set<std::string> bufs;
  for (auto& [k, v] : r.named_buffers()) bufs.insert(k);
  EXPECT_TRUE(bufs.count("layer2.0.downsample.1.running_var"));
  EXPECT_TRUE(bufs.count("bn1.num_batches_tracked"));
  for (auto& p : r.parameters()) EXPECT_TRUE(p.requires_grad() && p.is_leaf());
  for (auto& [k, b] : r.named_buffers()) EXPECT_FALSE(b.requires_grad()) << k;
}

TEST(Models, TrainEvalIsRecursive) {
  VisionTransformer vit(tiny_vit(false));
  EXPECT_TRUE(vit.is_training());
  vit.eval();
  EXPECT_FALSE(vit.blocks[1]->attn->is_training());
  EXPECT_FALSE(vit.head->is_training());
  vit.train();
  EXPECT_TRUE(vit.blocks[0]->mlp->fc1->is_training());
}

TEST(Models, ConvStateDictIsOIHW) {
  Generator g(3, Stream::Init);
  nn::Conv2d c(3, 5, 3, 1, 1, false, g);
  EXPECT_EQ(shape_str(c.weight.shape()), "[5, 3, 3, 3]");  // engine [O, kh, kw, I]
  nn::Conv2d c2(2, 4, 3, 1, 1, true, g);
  Tensor w = c2.weight;  // [4, 3, 3, 2]
  Tensor f = c2.state_dict().at("weight");
  ASSERT_EQ(shape_str(f.shape()), "[4, 2, 3, 3]");
  auto wv = w.to_vector(), fv = f.to_vector();
  for (int o = 0; o < 4; ++o)
    for (int i = 0; i < 2; ++i)
      for (int y = 0; y < 3; ++y)
        for (int x = 0; x < 3; ++x)
          ASSERT_EQ(fv[((o * 2 + i) * 3 + y) * 3 + x], wv[((o * 3 + y) * 3 + x) * 2 + i]);
  // Load back into a differently seeded conv gives the same engine weights.
  Generator g2(99, Stream::Init);
  nn::Conv2d c3(2, 4, 3, 1, 1, true, g2);
  c3.load_state_dict(c2.state_dict());
  EXPECT_EQ(rel_error(c3.weight, c2.weight), 0.0);
  EXPECT_EQ(rel_error(c3.bias, c2.bias), 0.0);
}

TEST(Models, StrictLoadListsEverything) {
  VisionTransformer vit(tiny_vit(false));
  io::TensorMap sd = vit.state_dict();
  sd.erase("blocks.0.norm1.bias");
  sd.erase("head.weight");
  sd["blocks.7.attn.qkv.weight"] = Tensor::zeros({3, 3});
  sd["patch_embed.proj.weight"] = Tensor::zeros({32, 3, 4, 4});  // file layout OIHW, wrong k
  const Tensor before = vit.pos_embed.clone();
  sd["pos_embed"] = Tensor::zeros(vit.pos_embed.shape());  // would change pos_embed if applied
  try {
    vit.load_state_dict(sd);
    FAIL() << "strict load accepted a bad state dict";
  } catch (const Error& e) {
    std::string m = e.what();
    for (const char* s : {"load_state_dict", "missing (2)", "blocks.0.norm1.bias", "head.weight",
                          "unexpected (1)", "blocks.7.attn.qkv.weight", "wrong shape (1)",
                          "patch_embed.proj.weight", "[32, 3, 4, 4]", "[32, 3, 8, 8]"})
      EXPECT_NE(m.find(s), std::string::npos) << "message lacks '" << s << "':\n" << m;
  }
  EXPECT_EQ(rel_error(vit.pos_embed, before), 0.0) << "a failed load modified the model";

  // Non-strict: missing/unexpected are ignored, a wrong shape still fails.
  EXPECT_THROW(vit.load_state_dict(sd, false), Error);
  sd.erase("patch_embed.proj.weight");
  vit.load_state_dict(sd, false);
  EXPECT_EQ(vit.pos_embed.to_vector(), std::vector<float>(vit.pos_embed.numel(), 0.f));
}

void check_vit_against_timm(Device dev) {
  auto fx = load_fixture("models_vit.safetensors");
  auto gr = load_fixture("models_vit_grads.safetensors");
  VisionTransformer m(tiny_vit(false), 5);
  io::TensorMap sd = with_prefix(fx, "state.");
  expect_same_names_and_shapes(m, sd);
  m.load_state_dict(sd);
  m.to(dev);
  m.train();
  Tensor input = fx.at("input").to(dev);
  Tensor logits = m.forward(input);
  EXPECT_LT(rel_error(logits, fx.at("logits")), 1e-4);
  Tensor loss = cross_entropy(logits, fx.at("labels").to(dev));
  EXPECT_LT(rel_error(loss, fx.at("loss")), 1e-4);
  loss.backward();
  expect_grads(m, gr, 1e-3);

  Features f = m.forward_features(input);
  EXPECT_EQ(shape_str(f.cls.shape()), "[4, 32]");
  EXPECT_FALSE(f.dist.defined());
  EXPECT_EQ(shape_str(f.patch_tokens.shape()), "[4, 16, 32]");
  EXPECT_LT(rel_error(f.pooled, mean(f.patch_tokens, {1})), 1e-6);
  EXPECT_LT(rel_error(m.head->forward(f.cls), fx.at("logits")), 1e-4);
}

TEST(Models, ViTMatchesTimm) { check_vit_against_timm(Device::cpu()); }

void check_deit_against_timm(Device dev) {
  auto fx = load_fixture("models_deit.safetensors");
  auto gr = load_fixture("models_deit_grads.safetensors");
  VisionTransformer m(tiny_vit(true), 6);
  io::TensorMap sd = with_prefix(fx, "state.");
  expect_same_names_and_shapes(m, sd);
  m.load_state_dict(sd);
  m.to(dev);
  Tensor input = fx.at("input").to(dev), labels = fx.at("labels").to(dev);
  m.eval();
  {
    NoGrad ng;
    EXPECT_LT(rel_error(m.forward(input), fx.at("logits_eval")), 1e-4);
  }
  m.train();
  auto [cls, dist] = m.forward_heads(input);
  EXPECT_LT(rel_error(cls, fx.at("logits")), 1e-4);
  EXPECT_LT(rel_error(dist, fx.at("dist_logits")), 1e-4);
  Tensor loss = scale(add(cross_entropy(cls, labels), cross_entropy(dist, labels)), 0.5f);
  EXPECT_LT(rel_error(loss, fx.at("loss")), 1e-4);
  loss.backward();
  expect_grads(m, gr, 1e-3);
  EXPECT_EQ(shape_str(m.forward_features(input).dist.shape()), "[4, 32]");
}

TEST(Models, DistilledDeiTMatchesTimm) { check_deit_against_timm(Device::cpu()); }

void check_resnet_against_timm(const std::string& fixture, const ResNetConfig& cfg,
                               int64_t feature_dim, Device dev = Device::cpu()) {
  auto fx = load_fixture(fixture + ".safetensors");
  auto gr = load_fixture(fixture + "_grads.safetensors");
  ResNet m(cfg, 7);
  io::TensorMap sd = with_prefix(fx, "state.");
  expect_same_names_and_shapes(m, sd);
  m.load_state_dict(sd);
  m.to(dev);
  Tensor input = fx.at("input").to(dev);
  m.eval();
  {
    NoGrad ng;
    EXPECT_LT(rel_error(m.forward(input), fx.at("logits_eval")), 1e-4);
  }
  m.train();
  Tensor logits = m.forward(input);
  EXPECT_LT(rel_error(logits, fx.at("logits")), 1e-4);
  Tensor loss = cross_entropy(logits, fx.at("labels").to(dev));
  EXPECT_LT(rel_error(loss, fx.at("loss")), 1e-4);
  loss.backward();
  expect_grads(m, gr, 1e-3);
  // Running statistics and the batch counter after one training forward.
  io::TensorMap after = with_prefix(fx, "after.");
  io::TensorMap now = m.state_dict();
  ASSERT_FALSE(after.empty());
  for (auto& [k, v] : after) {
    if (k.find("num_batches_tracked") != std::string::npos)
      EXPECT_EQ(now.at(k).to_vector_i64(), v.to_vector_i64()) << k;
    else
      EXPECT_LT(rel_error(now.at(k), v), 1e-4) << k;
  }
  EXPECT_EQ(m.feature_dim(), feature_dim);
}

TEST(Models, ResNetMatchesTimm) { check_resnet_against_timm("models_resnet", tiny_resnet(), 24); }

TEST(Models, BottleneckResNetMatchesTimm) {
  check_resnet_against_timm("models_resnet_bottleneck", tiny_resnet("models_resnet_bottleneck"),
                            32);
}

void check_regnet_against_timm(Device dev) {
  auto fx = load_fixture("models_regnet.safetensors");
  auto gr = load_fixture("models_regnet_grads.safetensors");
  RegNet m(tiny_regnet(), 9);
  io::TensorMap sd = with_prefix(fx, "state.");
  expect_same_names_and_shapes(m, sd);
  m.load_state_dict(sd);
  m.to(dev);
  Tensor input = fx.at("input").to(dev);
  m.eval();
  double e_eval;
  {
    NoGrad ng;
    e_eval = rel_error(m.forward(input), fx.at("logits_eval"));
    EXPECT_LT(e_eval, 1e-4);
  }
  m.train();
  Tensor logits = m.forward(input);
  const double e_logits = rel_error(logits, fx.at("logits"));
  EXPECT_LT(e_logits, 1e-4);
  Tensor loss = cross_entropy(logits, fx.at("labels").to(dev));
  const double e_loss = rel_error(loss, fx.at("loss"));
  EXPECT_LT(e_loss, 1e-4);
  loss.backward();
  const double e_grad = expect_grads(m, gr, 1e-3);
  io::TensorMap after = with_prefix(fx, "after.");
  io::TensorMap now = m.state_dict();
  ASSERT_FALSE(after.empty());
  double e_stats = 0;
  for (auto& [k, v] : after) {
    if (k.find("num_batches_tracked") != std::string::npos) {
      EXPECT_EQ(now.at(k).to_vector_i64(), v.to_vector_i64()) << k;
    } else {
      const double e = rel_error(now.at(k), v);
      EXPECT_LT(e, 1e-4) << k;
      e_stats = std::max(e_stats, e);
    }
  }
  EXPECT_EQ(m.feature_dim(), 40);
  std::printf(
      "RegNet vs timm (%s): rel error logits_eval %.2e, logits %.2e, loss %.2e, worst of %zu "
      "parameter gradients %.2e, worst running stat %.2e\n",
      dev.is_cpu() ? "cpu" : "cuda", e_eval, e_logits, e_loss, gr.size(), e_grad, e_stats);
}

TEST(Models, RegNetMatchesTimm) { check_regnet_against_timm(Device::cpu()); }

// The full-size teacher: key set, file shapes and parameter count of timm's regnety_160
// (tests/data/models_regnety_160_keys.txt), without its 84M-parameter weights.
TEST(Models, RegNetY160KeysMatchTimm) {
  std::ifstream f(test::fixture_path("models_regnety_160_keys.txt"));
  ASSERT_TRUE(f) << "cannot read models_regnety_160_keys.txt";
  std::map<std::string, std::string> timm_keys;
  int64_t timm_params = -1;
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("# num_parameters ", 0) == 0) {
      timm_params = std::stoll(line.substr(17));
      continue;
    }
    if (line.rfind("#", 0) == 0) continue;  // the writer's metadata ("# key: value")
    const auto sp = line.find(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    timm_keys[line.substr(0, sp)] = line.substr(sp + 1);
  }
  ASSERT_EQ(timm_params, 83590140);
  auto m = create_model("regnety_160");
  EXPECT_EQ(m->num_parameters(), timm_params);
  EXPECT_EQ(model_spec("regnety_160").num_parameters(), timm_params);
  EXPECT_EQ(m->feature_dim(), 3024);
  io::TensorMap sd = m->state_dict();
  std::set<std::string> ours;
  for (auto& [k, v] : sd) {
    ours.insert(k);
    auto it = timm_keys.find(k);
    if (it == timm_keys.end())
      ADD_FAILURE() << "mokd has '" << k << "' that timm lacks";
    else
      EXPECT_EQ(shape_str(v.shape()), it->second) << k;
  }
  for (auto& [k, s] : timm_keys)
    EXPECT_TRUE(ours.count(k)) << "timm has '" << k << "' that mokd lacks";
  std::printf("regnety_160: %zu state-dict entries, %lld parameters (timm %lld)\n", sd.size(),
              static_cast<long long>(m->num_parameters()), static_cast<long long>(timm_params));
}

// A built model's state dict (names in registration order, file-layout shapes) against
// vit_state_shapes of its config.
void expect_vit_state_shapes(const ViTConfig& cfg, const std::string& what) {
  VisionTransformer m(cfg);
  const auto listed = vit_state_shapes(cfg);
  const io::TensorMap sd = m.state_dict();
  const nn::NamedTensors params = m.named_parameters();
  ASSERT_TRUE(m.named_buffers().empty()) << what;
  ASSERT_EQ(params.size(), listed.size()) << what;
  ASSERT_EQ(sd.size(), listed.size()) << what;
  for (size_t i = 0; i < listed.size(); ++i) {
    EXPECT_EQ(params[i].first, listed[i].first) << what << " entry " << i;
    auto it = sd.find(listed[i].first);
    ASSERT_NE(it, sd.end()) << what << ": " << listed[i].first;
    EXPECT_EQ(shape_str(it->second.shape()), shape_str(listed[i].second))
        << what << " " << listed[i].first;
  }
  EXPECT_EQ(vit_num_parameters(cfg), m.num_parameters()) << what;
}

// vit_state_shapes, which the full-size checks rely on, is what the constructor builds: plain,
// distilled, without qkv bias or class token, at several sizes and patch grids.
TEST(Models, ViTStateShapesMatchTheModel) {
  for (const char* n :
       {"vit_fmnist_tiny", "vit_fmnist_tiny_distilled", "vit_fmnist_micro", "vit_tiny_patch16_224"})
    expect_vit_state_shapes(model_spec(n).vit, n);
  ViTConfig c = model_spec("vit_fmnist_micro").vit;
  c.qkv_bias = false;
  c.num_classes = 7;
  expect_vit_state_shapes(c, "micro without qkv bias, 7 classes");
  c = model_spec("vit_fmnist_micro").vit;
  c.class_token = false;
  c.img_size = 32;
  c.patch_size = 8;
  c.mlp_ratio = 2.5;
  expect_vit_state_shapes(c, "micro without class token, 32 px, patch 8, mlp ratio 2.5");
}

// timm's standard ViTs (tests/data/models_vit_keys.txt, written on the meta device): each vit_*
// registry entry has exactly timm's state-dict keys and file shapes (vit_state_shapes, checked
// against built models above, so the 300M-parameter ones need no weights) and timm's parameter
// count; the smallest is also built and compared as a model.
TEST(Models, ViTRegistryKeysMatchTimm) {
  std::ifstream f(test::fixture_path("models_vit_keys.txt"));
  ASSERT_TRUE(f) << "cannot read models_vit_keys.txt";
  struct Keys {
    int64_t num_parameters = -1, num_heads = -1;
    std::map<std::string, std::string> shapes;
  };
  std::vector<std::pair<std::string, Keys>> models;
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("#", 0) == 0) continue;  // the writer's metadata ("# key: value")
    std::istringstream is(line);
    std::string first;
    is >> first;
    if (first == "model") {
      std::string name, label1, label2;
      Keys k;
      is >> name >> label1 >> k.num_parameters >> label2 >> k.num_heads;
      ASSERT_TRUE(is && label1 == "num_parameters" && label2 == "num_heads") << line;
      models.emplace_back(name, k);
      continue;
    }
    ASSERT_FALSE(models.empty()) << "a key before the first model line: " << line;
    const auto sp = line.find(' ');
    ASSERT_NE(sp, std::string::npos) << line;
    models.back().second.shapes[line.substr(0, sp)] = line.substr(sp + 1);
  }
  ASSERT_EQ(models.size(), 13u);
  std::set<std::string> registered;
  for (auto& s : model_specs())
    if (s.name.rfind("vit_", 0) == 0 && s.name.find("fmnist") == std::string::npos)
      registered.insert(s.name);
  auto expect_keys = [](const std::string& name, const std::map<std::string, std::string>& ours,
                        const std::map<std::string, std::string>& timm) {
    for (auto& [k, s] : ours) {
      auto it = timm.find(k);
      if (it == timm.end())
        ADD_FAILURE() << name << ": mokd has '" << k << "' that timm lacks";
      else
        EXPECT_EQ(s, it->second) << name << " " << k;
    }
    for (auto& [k, s] : timm)
      EXPECT_TRUE(ours.count(k)) << name << ": timm has '" << k << "' that mokd lacks";
  };
  for (auto& [name, keys] : models) {
    EXPECT_TRUE(registered.erase(name)) << name << " is not in the registry";
    const ModelSpec spec = model_spec(name);
    ASSERT_EQ(spec.kind, ModelSpec::Kind::ViT) << name;
    EXPECT_FALSE(spec.vit.distilled) << name;
    EXPECT_EQ(spec.vit.num_heads, keys.num_heads) << name;
    EXPECT_EQ(spec.num_parameters(), keys.num_parameters) << name;
    std::map<std::string, std::string> ours;
    for (auto& [k, s] : vit_state_shapes(spec.vit)) ours[k] = shape_str(s);
    expect_keys(name, ours, keys.shapes);
    if (name == "vit_tiny_patch16_224") {
      auto m = create_model(name);
      EXPECT_EQ(m->num_parameters(), keys.num_parameters);
      EXPECT_EQ(m->num_classes(), 1000);
      std::map<std::string, std::string> built;
      for (auto& [k, v] : m->state_dict()) built[k] = shape_str(v.shape());
      expect_keys(name + " (built)", built, keys.shapes);
    }
  }
  for (auto& n : registered) ADD_FAILURE() << "registry entry " << n << " is not in the fixture";
}

// timm's _init_weights: conv N(0, sqrt(2 / (k * k * out / groups))), zero biases, conv3's BN
// gamma 0 (zero_init_last), head.fc N(0, 0.01) with zero bias.
TEST(Models, RegNetInitFollowsTimm) {
  auto m = create_model("regnety_fmnist_small", ModelOverrides{.seed = 4});
  auto& r = dynamic_cast<RegNet&>(*m);
  auto std_of = [](const Tensor& t) {
    auto v = t.to_vector();
    double s = 0, s2 = 0;
    for (float x : v) s += x, s2 += static_cast<double>(x) * x;
    const double mu = s / v.size();
    return std::sqrt(s2 / v.size() - mu * mu);
  };
  auto* b = r.stages[3][0];  // mid 128, groups 16
  EXPECT_EQ(b->conv2->conv->params.groups, 16);
  EXPECT_NEAR(std_of(b->conv2->conv->weight), std::sqrt(2.0 * 16 / (9 * 128)),
              0.05 * std::sqrt(2.0 * 16 / (9 * 128)));
  EXPECT_NEAR(std_of(b->conv1->conv->weight), std::sqrt(2.0 / 128), 0.05 * std::sqrt(2.0 / 128));
  EXPECT_NEAR(std_of(r.fc->weight), 0.01, 0.001);
  for (auto& [k, p] : m->named_parameters()) {
    const bool zero = k.find("conv3.bn.weight") != std::string::npos ||
                      (k.find(".bias") != std::string::npos && k.find(".bn.") == std::string::npos);
    if (zero) EXPECT_EQ(p.to_vector(), std::vector<float>(p.numel(), 0.f)) << k;
  }
  EXPECT_EQ(b->se->fc1->out_channels, 16);  // round(64 input channels * 0.25)
  EXPECT_EQ(shape_str(m->state_dict().at("s1.b1.se.fc1.weight").shape()),
            "[4, 16, 1, 1]");  // 16 in -> 4
  ModelOverrides o;
  o.drop_path_rate = 0.2f;
  auto d = create_model("regnety_fmnist_small", o);
  auto& rd = dynamic_cast<RegNet&>(*d);
  EXPECT_FLOAT_EQ(rd.stages[0][0]->drop_path_rate, 0.f);
  EXPECT_FLOAT_EQ(rd.stages[2][1]->drop_path_rate, 0.2f * 3 / 4);
  EXPECT_FLOAT_EQ(rd.stages[3][0]->drop_path_rate, 0.2f);
}

// The SE gate saturates without NaNs (sigmoid is composed from a softmax over [0, z]).
TEST(Models, RegNetSqueezeExciteGateIsStable) {
  Generator g(5, Stream::Init);
  nn::SqueezeExcite se(4, 2, g);
  {
    NoGrad ng;
    se.fc2->bias.copy_(Tensor::from_vector({-200.f, 200.f, 0.f, 3.f}, {4}));
    se.fc2->weight.fill_(0.0);
  }
  Tensor x = test::randn({2, 3, 3, 4}, 6);
  x.set_requires_grad(true);
  Tensor y = se.forward(x);
  auto xv = x.to_vector(), yv = y.to_vector();
  const float gate[4] = {0.f, 1.f, 0.5f, 1.f / (1.f + std::exp(-3.f))};
  for (size_t i = 0; i < yv.size(); ++i) EXPECT_NEAR(yv[i], xv[i] * gate[i % 4], 1e-6) << i;
  sum(y).backward();
  for (float v : x.grad().to_vector()) EXPECT_TRUE(std::isfinite(v));
  for (float v : se.fc1->weight.grad().to_vector()) EXPECT_TRUE(std::isfinite(v));
}

TEST(Models, RegNetBadConfigNamesTheValue) {
  RegNetConfig c = tiny_regnet();
  c.widths = {8, 12, 24, 40};  // 12 is not a multiple of group size 8
  try {
    RegNet m(c);
    FAIL();
  } catch (const Error& e) {
    std::string s = e.what();
    EXPECT_NE(s.find("RegNet"), std::string::npos) << s;
    EXPECT_NE(s.find("12"), std::string::npos) << s;
  }
  c = tiny_regnet();
  c.depths[2] = 0;
  EXPECT_THROW(RegNet{c}, Error);
  auto r = create_model("regnety_fmnist_small");
  EXPECT_THROW(r->forward(test::randn({1, 28, 28, 3}, 1)), Error);
}

TEST(Models, SaveLoadRoundTrip) {
  const auto dir = std::filesystem::temp_directory_path() / "mokd_test_models";
  std::filesystem::create_directories(dir);
  for (const char* name :
       {"vit_fmnist_tiny_distilled", "resnet_fmnist_small", "regnety_fmnist_small"}) {
    ModelOverrides o;
    o.seed = 1;
    auto a = create_model(name, o);
    o.seed = 2;
    auto b = create_model(name, o);
    Tensor x = test::randn({2, 28, 28, 1}, 4);
    a->train();
    {
      NoGrad ng;
      a->forward(x);
    }  // moves BN running stats and the batch counter off their init
    a->eval();
    b->eval();
    const std::string path = (dir / (std::string(name) + ".safetensors")).string();
    io::save_safetensors(path, a->state_dict());
    b->load_state_dict(io::load_safetensors(path));
    NoGrad ng;
    Tensor ya = a->forward(x), yb = b->forward(x);
    EXPECT_EQ(rel_error(yb, ya), 0.0) << name;
    io::TensorMap sa = a->state_dict(), sb = b->state_dict();
    for (auto& [k, v] : sa) EXPECT_EQ(v.to_vector(), sb.at(k).to_vector()) << name << " " << k;
  }
}

// A state dict without the BatchNorm counters (older torch, some exporters) loads strictly to the
// same parameters and statistics, with every counter at 0; any other missing entry is refused.
TEST(Models, LoadsWithoutBatchNormCounters) {
  test::TempDir dir;
  for (const char* name : {"resnet_fmnist_small", "regnety_fmnist_small"}) {
    auto a = create_model(name, ModelOverrides{.seed = 1});
    {
      NoGrad ng;
      a->forward(test::randn({2, 28, 28, 1}, 4));  // statistics and counters off their init
    }
    io::TensorMap full = a->state_dict(), bare;
    size_t counters = 0;
    for (auto& [k, v] : full) {
      if (k.size() > 20 && k.compare(k.size() - 20, 20, ".num_batches_tracked") == 0)
        ++counters;
      else
        bare[k] = v;
    }
    ASSERT_GT(counters, 0u) << name;
    const std::string with = dir.path(std::string(name) + "_with.safetensors"),
                      without = dir.path(std::string(name) + "_without.safetensors");
    io::save_safetensors(with, full);
    io::save_safetensors(without, bare);

    auto b = create_model(name, ModelOverrides{.seed = 2});
    auto c = create_model(name, ModelOverrides{.seed = 3});
    {
      NoGrad ng;
      c->forward(test::randn({2, 28, 28, 1}, 5));  // c's counters are 1 before the load
    }
    b->load_state_dict(io::load_safetensors(with));
    c->load_state_dict(io::load_safetensors(without));
    io::TensorMap sb = b->state_dict(), sc = c->state_dict();
    ASSERT_EQ(sb.size(), full.size()) << name;
    ASSERT_EQ(sc.size(), full.size()) << name;
    for (auto& [k, v] : full) {
      if (bare.count(k)) {
        EXPECT_EQ(sb.at(k).to_vector(), v.to_vector()) << name << " " << k;
        EXPECT_EQ(sc.at(k).to_vector(), v.to_vector()) << name << " " << k;
      } else {
        EXPECT_EQ(sb.at(k).to_vector_i64(), std::vector<int64_t>{1}) << name << " " << k;
        EXPECT_EQ(sc.at(k).to_vector_i64(), std::vector<int64_t>{0}) << name << " " << k;
      }
    }

    // Any other entry stays required: only it is listed, and nothing is modified.
    io::TensorMap lacking = bare;
    const std::string gone = bare.count("bn1.running_mean") ? "bn1.running_mean" : "stem.bn.weight";
    ASSERT_EQ(lacking.erase(gone), 1u) << name;
    auto d = create_model(name, ModelOverrides{.seed = 4});
    const io::TensorMap before = d->state_dict();
    test::expect_error([&] { d->load_state_dict(lacking); }, {"missing (1)", gone});
    EXPECT_EQ(test::error_of([&] { d->load_state_dict(lacking); }).find("num_batches_tracked"),
              std::string::npos)
        << name;
    for (auto& [k, v] : d->state_dict())
      EXPECT_EQ(v.to_vector(), before.at(k).to_vector()) << name << " " << k << " changed";
  }
}

TEST(Models, RegistryCountsAndShapes) {
  auto list = list_models();
  std::set<std::string> names;
  for (auto& [n, d] : list) {
    names.insert(n);
    EXPECT_NE(d.find("params"), std::string::npos) << n;
  }
  for (const char* n :
       {"deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
        "deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224",
        "deit_base_distilled_patch16_224", "resnet18", "resnet34", "resnet50", "resnet101",
        "resnet152", "vit_fmnist_tiny", "vit_fmnist_tiny_distilled", "resnet_fmnist_small",
        "regnety_008", "regnety_016", "regnety_040", "regnety_160", "regnety_fmnist_small"})
    EXPECT_TRUE(names.count(n)) << n;
  // Parameter counts of timm 1.0 (sum of p.numel() over timm.create_model(name).parameters()).
  EXPECT_EQ(model_spec("deit_tiny_patch16_224").num_parameters(), 5717416);
  EXPECT_EQ(model_spec("deit_small_distilled_patch16_224").num_parameters(), 22436432);
  EXPECT_EQ(model_spec("resnet18").num_parameters(), 11689512);
  EXPECT_EQ(model_spec("resnet50").num_parameters(), 25557032);
  EXPECT_EQ(model_spec("regnety_008").num_parameters(), 6263168);
  EXPECT_EQ(model_spec("regnety_016").num_parameters(), 11202430);
  EXPECT_EQ(model_spec("regnety_040").num_parameters(), 20646656);
  EXPECT_EQ(model_spec("regnety_160").num_parameters(), 83590140);
  // The analytic count equals the built model's.
  for (const char* n : {"vit_fmnist_tiny", "vit_fmnist_tiny_distilled", "resnet_fmnist_small",
                        "resnet18_fmnist", "regnety_fmnist_small", "regnety_008"}) {
    auto m = create_model(n);
    EXPECT_EQ(m->num_parameters(), model_spec(n).num_parameters()) << n;
    EXPECT_EQ(m->name(), n);
  }
  ModelOverrides o;
  o.num_classes = 7;
  o.img_size = 32;
  auto m = create_model("vit_fmnist_tiny", o);
  EXPECT_EQ(m->num_classes(), 7);
  Tensor y;
  {
    NoGrad ng;
    y = m->forward(test::randn({2, 32, 32, 1}, 5));
  }
  EXPECT_EQ(shape_str(y.shape()), "[2, 7]");
  try {
    create_model("resnet51");
    FAIL();
  } catch (const Error& e) {
    std::string s = e.what();
    EXPECT_NE(s.find("resnet51"), std::string::npos);
    EXPECT_NE(s.find("resnet50"), std::string::npos);
  }
}

TEST(Models, FmnistModelsRunAndPool) {
  Tensor x = test::randn({3, 28, 28, 1}, 8);
  auto r = create_model("resnet_fmnist_small");
  ModelOutput o = r->forward_train(x);
  EXPECT_EQ(shape_str(o.logits.shape()), "[3, 10]");
  EXPECT_EQ(o.features.pooled.size(1), r->feature_dim());
  EXPECT_FALSE(o.dist_logits.defined());
  auto g = create_model("regnety_fmnist_small");
  ModelOutput og = g->forward_train(x);
  EXPECT_EQ(shape_str(og.logits.shape()), "[3, 10]");
  EXPECT_EQ(shape_str(og.features.pooled.shape()), "[3, 128]");
  EXPECT_EQ(g->feature_dim(), 128);
  auto v = create_model("vit_fmnist_tiny_distilled");
  EXPECT_TRUE(v->has_dist_head());
  ModelOutput ov = v->forward_train(x);
  EXPECT_EQ(shape_str(ov.dist_logits.shape()), "[3, 10]");
  EXPECT_EQ(shape_str(ov.features.patch_tokens.shape()), "[3, 49, 96]");
  EXPECT_EQ(ov.features.pooled.size(1), v->feature_dim());
  // Eval output averages the heads.
  v->eval();
  NoGrad ng;
  ModelOutput e = v->forward_train(x);
  EXPECT_LT(rel_error(v->forward(x), scale(add(e.logits, e.dist_logits), 0.5f)), 1e-6);
}

TEST(Models, DropPathIsSeededAndOffInEval) {
  ModelOverrides o;
  o.seed = 3;
  auto plain = create_model("vit_fmnist_tiny", o);
  o.drop_path_rate = 0.5f;
  auto dp1 = create_model("vit_fmnist_tiny", o);
  auto dp2 = create_model("vit_fmnist_tiny", o);
  Tensor x = test::randn({4, 28, 28, 1}, 9);
  NoGrad ng;
  Tensor a = dp1->forward(x), b = dp2->forward(x), c = plain->forward(x);
  EXPECT_EQ(rel_error(a, b), 0.0) << "same seed, same masks";
  EXPECT_GT(rel_error(a, c), 1e-3) << "drop-path had no effect in train mode";
  plain->eval();
  dp1->eval();
  EXPECT_EQ(rel_error(dp1->forward(x), plain->forward(x)), 0.0);
}

TEST(Models, BadInputsNameTheModel) {
  auto v = create_model("vit_fmnist_tiny");
  try {
    v->forward(test::randn({1, 32, 32, 1}, 1));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PatchEmbed"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("[1, 32, 32, 1]"), std::string::npos) << e.what();
  }
  auto r = create_model("resnet_fmnist_small");
  EXPECT_THROW(r->forward(test::randn({1, 28, 28, 3}, 1)), Error);
}

// Full-size timm checkpoints, written by `python3 tools/reference/models.py --fullsize DIR`.
TEST(Models, FullSizeTimmCheckpoints) {
  const char* dir = std::getenv("MOKD_FULLSIZE_DIR");
  if (!dir) GTEST_SKIP() << "set MOKD_FULLSIZE_DIR (see tools/reference/models.py)";
  for (const char* name :
       {"deit_tiny_patch16_224", "deit_small_distilled_patch16_224", "resnet50", "regnety_160"}) {
    const std::string base = std::string(dir) + "/" + name;
    auto m = create_model(name);
    auto sd = io::load_safetensors(base + ".safetensors");
    expect_same_names_and_shapes(*m, sd);
    m->load_state_dict(sd);
    m->eval();
    auto io_ = io::load_safetensors(base + "_io.safetensors");
    NoGrad ng;
    const double e = rel_error(m->forward(io_.at("input")), io_.at("logits"));
    EXPECT_LT(e, 1e-4) << name;
    std::printf("%s: eval logits rel error vs timm %.2e\n", name, e);
  }
}

}  // namespace
}  // namespace mokd

namespace mokd {
namespace {

// Writes mokd checkpoints plus inputs/logits for tools/export_check.py (run by hand or by CI
// scripts): MOKD_EXPORT_DIR=DIR, then `python3 tools/export_check.py DIR/<m>.safetensors --model
// <m> --io DIR/<m>_io.safetensors`.
TEST(Models, ExportForTimm) {
  const char* dir = std::getenv("MOKD_EXPORT_DIR");
  if (!dir) GTEST_SKIP() << "set MOKD_EXPORT_DIR (see tools/export_check.py)";
  std::filesystem::create_directories(dir);
  uint64_t seed = 40;
  for (const char* name :
       {"vit_fmnist_tiny", "vit_fmnist_tiny_distilled", "vit_fmnist_micro",
        "vit_fmnist_micro_distilled", "resnet_fmnist_small", "resnet18_fmnist"}) {
    auto m = create_model(name);
    Tensor x = test::randn({2, 28, 28, 1}, ++seed);
    {
      NoGrad ng;
      // Move every weight off its initial value (zero-init BN gammas, zero biases) and the BN
      // running statistics off theirs.
      for (auto& p : m->parameters()) p.copy_(add(p, test::randn(p.shape(), ++seed, 0.1f)));
      m->train();
      m->forward(x);
      m->eval();
    }
    const std::string base = std::string(dir) + "/" + name;
    io::save_safetensors(base + ".safetensors", m->state_dict(), {{"model", name}});
    NoGrad ng;
    io::save_safetensors(base + "_io.safetensors", {{"input", x}, {"logits", m->forward(x)}});
  }
}

// The same timm fixtures on the GPU (f32; TF32 off), where one is present.
class CudaModels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!device_available(Device::cuda()))
      GTEST_SKIP() << "no CUDA device: the GPU variants of the timm fixture tests need one";
  }
};
TEST_F(CudaModels, ViTMatchesTimm) { check_vit_against_timm(Device::cuda()); }
TEST_F(CudaModels, DistilledDeiTMatchesTimm) { check_deit_against_timm(Device::cuda()); }
TEST_F(CudaModels, ResNetMatchesTimm) {
  check_resnet_against_timm("models_resnet", tiny_resnet(), 24, Device::cuda());
}
TEST_F(CudaModels, RegNetMatchesTimm) { check_regnet_against_timm(Device::cuda()); }

}  // namespace
}  // namespace mokd
