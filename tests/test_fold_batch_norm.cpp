// Batch norm folded into the convolutions of a frozen teacher (nn::fold_batch_norm_into,
// Model::fold_batch_norm): the oracle is the same model unfolded in eval mode, with random batch
// norm statistics and affine parameters, on the CPU; the folded model on a GPU must give the
// unfolded CPU values. Also what a folded model refuses (training, saving).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "models/layers.h"
#include "models/registry.h"
#include "models/regnet.h"
#include "models/resnet.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

// Non-trivial statistics and affine parameters for every batch norm, drawn from the model's
// file-layout state dict and loaded back (a fresh model's are 0 / 1: folding them is trivial).
void randomise_batch_norms(Model& m, uint64_t seed) {
  io::TensorMap sd = m.state_dict();
  Generator gen(seed, Stream::Init);
  for (auto& [name, t] : sd) {
    auto ends = [&](const char* s) {
      const std::string e(s);
      return name.size() > e.size() && name.compare(name.size() - e.size(), e.size(), e) == 0;
    };
    const bool var = ends("running_var"), mean = ends("running_mean");
    const bool bn = var || mean ||
                    ((ends(".weight") || ends(".bias")) && t.dim() == 1 &&
                     sd.count(name.substr(0, name.rfind('.')) + ".running_mean"));
    if (!bn) continue;
    Tensor u = Tensor::empty(t.shape());
    uniform_(u, var ? 0.2f : -1.f, var ? 3.f : 1.f, gen);
    if (ends(".weight")) uniform_(u, 0.3f, 1.7f, gen);
    t = u;
  }
  m.load_state_dict(sd);
}

std::unique_ptr<Model> tiny_resnet50(uint64_t seed) {
  ResNetConfig c;
  c.block = ResNetBlock::Bottleneck;
  c.layers = {1, 2, 1, 1};
  c.channels = {8, 16, 16, 32};
  c.stem_width = 16;
  c.num_classes = 7;
  c.img_size = 32;
  return std::make_unique<ResNet>(c, seed);
}

std::unique_ptr<Model> tiny_regnety(uint64_t seed) {
  RegNetConfig c;
  c.stem_width = 16;
  c.depths = {1, 2, 1, 1};
  c.widths = {16, 24, 32, 48};
  c.group_size = 8;
  c.num_classes = 7;
  c.img_size = 32;
  return std::make_unique<RegNet>(c, seed);
}

int64_t count_batch_norms(const Model& m) {
  int64_t n = 0;
  for (const auto& [name, t] : m.named_buffers())
    n += name.size() > 12 && name.compare(name.size() - 12, 12, "running_mean") == 0;
  return n;
}

// The folded model's logits and pooled features against the unfolded one's, both in eval mode.
void expect_fold_matches(const std::function<std::unique_ptr<Model>()>& make, int64_t img,
                         int64_t chans, Device folded_device) {
  std::unique_ptr<Model> ref = make(), folded = make();
  randomise_batch_norms(*ref, 17);
  folded->load_state_dict(ref->state_dict());
  ref->eval();
  folded->eval();
  folded->to(folded_device);
  const int64_t bns = count_batch_norms(*folded);
  ASSERT_GT(bns, 3);
  EXPECT_EQ(folded->fold_batch_norm(), bns) << "every batch norm follows a convolution";

  Generator gen(3, Stream::Init);
  Tensor x = Tensor::empty({3, img, img, chans});
  normal_(x, 0.f, 1.f, gen);
  const std::vector<float> a = ref->forward(x).to_vector();
  // Under NoGrad, as the distiller runs its teacher: the fused epilogues (bias_act); with
  // gradients enabled, the unfused composition.
  const std::vector<float> with_grad = folded->forward(x.to(folded_device)).to_vector();
  NoGrad no_grad;
  const std::vector<float> b = folded->forward(x.to(folded_device)).to_vector();
  const std::vector<float> fa = ref->forward_features(x).pooled.to_vector();
  const std::vector<float> fb = folded->forward_features(x.to(folded_device)).pooled.to_vector();
  ASSERT_EQ(a.size(), b.size());
  ASSERT_EQ(fa.size(), fb.size());
  // f32 rounding of the folded weights and of a different summation: relative to the scale of
  // the values (a unit roundoff is 6e-8; the tolerance allows the depth's accumulation).
  auto scale = [](const std::vector<float>& v) {
    double m = 0;
    for (float e : v) m = std::max(m, static_cast<double>(std::fabs(e)));
    return m;
  };
  const double ta = 2e-5 * std::max(1.0, scale(a)), tf = 2e-5 * std::max(1.0, scale(fa));
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(b[i], a[i], ta) << "logit " << i;
    EXPECT_NEAR(with_grad[i], a[i], ta) << "logit " << i << " (unfused epilogues)";
  }
  for (size_t i = 0; i < fa.size(); ++i) EXPECT_NEAR(fb[i], fa[i], tf) << "feature " << i;
  // The check must be able to fail: the statistics matter (dropping the batch norms would not
  // pass), which a model with trivial ones would not show.
  std::unique_ptr<Model> plain = make();
  plain->load_state_dict(ref->state_dict());
  plain->eval();
  for (auto& [name, t] : plain->named_buffers())
    if (name.find("running_mean") != std::string::npos) t.fill_(0.0);
  const std::vector<float> c = plain->forward(x).to_vector();
  double off = 0;
  for (size_t i = 0; i < a.size(); ++i) off = std::max(off, std::fabs(double(c[i]) - a[i]));
  EXPECT_GT(off, 100 * ta) << "the random statistics change the logits";
}

TEST(FoldBatchNorm, AFoldedResNetGivesTheUnfoldedLogits) {
  expect_fold_matches([] { return create_model("resnet_fmnist_small"); }, 28, 1, Device::cpu());
  expect_fold_matches([] { return tiny_resnet50(5); }, 32, 3, Device::cpu());
}

TEST(FoldBatchNorm, AFoldedRegNetYGivesTheUnfoldedLogits) {
  expect_fold_matches([] { return tiny_regnety(6); }, 32, 3, Device::cpu());
}

TEST(FoldBatchNorm, AConvolutionWithItsOwnBiasKeepsItInTheFold) {
  Generator gen(9, Stream::Init);
  nn::Conv2d conv(4, 6, 3, 1, 1, /*bias=*/true, gen);
  nn::BatchNorm2d bn(6);
  uniform_(conv.bias, -1.f, 1.f, gen);
  uniform_(bn.weight, 0.3f, 1.7f, gen);
  uniform_(bn.bias, -1.f, 1.f, gen);
  uniform_(bn.running_mean, -1.f, 1.f, gen);
  uniform_(bn.running_var, 0.2f, 3.f, gen);
  conv.eval();
  bn.eval();
  Tensor x = Tensor::empty({2, 5, 5, 4});
  normal_(x, 0.f, 1.f, gen);
  NoGrad ng;
  const std::vector<float> want = bn.forward(conv.forward(x)).to_vector();
  nn::fold_batch_norm_into(conv, bn);
  EXPECT_FALSE(conv.folded_bias.defined()) << "the convolution's own bias holds the fold";
  const std::vector<float> got = bn.forward(conv.forward(x)).to_vector();
  const std::vector<float> fused = conv.forward_bias_act(x, nullptr, false).to_vector();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(got[i], want[i], 2e-5 * std::max(1.f, std::fabs(want[i]))) << i;
    EXPECT_NEAR(fused[i], want[i], 2e-5 * std::max(1.f, std::fabs(want[i]))) << i;
  }
}

TEST(FoldBatchNorm, ViTsHaveNoBatchNormToFold) {
  std::unique_ptr<Model> m = create_model("vit_fmnist_micro");
  m->eval();
  EXPECT_EQ(m->fold_batch_norm(), 0);
}

TEST(FoldBatchNorm, AFoldedModelRefusesToTrainOrBeSaved) {
  std::unique_ptr<Model> m = create_model("resnet_fmnist_small");
  m->train();
  test::expect_error([&] { m->fold_batch_norm(); }, {"eval mode"});
  m->eval();
  m->fold_batch_norm();
  test::expect_error([&] { m->fold_batch_norm(); }, {"folded already"});
  test::expect_error([&] { (void)m->state_dict(); }, {"folded into its convolution", "before"});
  m->train();
  Tensor x = Tensor::zeros({1, 28, 28, 1});
  test::expect_error([&] { (void)m->forward(x); }, {"folded", "cannot train"});
}

TEST(CudaFoldBatchNorm, AFoldedTeacherOnTheGpuGivesTheUnfoldedCpuLogits) {
  SKIP_WITHOUT_CUDA();
  expect_fold_matches([] { return tiny_resnet50(5); }, 32, 3, Device::cuda());
  expect_fold_matches([] { return tiny_regnety(6); }, 32, 3, Device::cuda());
}

}  // namespace
}  // namespace mokd
