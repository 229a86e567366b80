// FAMO: the official algorithm's weights and loss gradients (tests/data/famo.safetensors from
// tools/make_reference.py famo, whose params give the settings), invariants, and clear errors for
// non-positive losses.
#include <cmath>

#include "mokd/famo.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

std::vector<Tensor> row_losses(const Tensor& m, int64_t s, bool requires_grad) {
  std::vector<Tensor> out;
  auto v = narrow(m, 0, s, 1).to_vector();
  for (float x : v) {
    Tensor t = Tensor::from_vector({x}, {});
    if (requires_grad) t.set_requires_grad(true);
    out.push_back(t);
  }
  return out;
}

TEST(Famo, MatchesOfficialAlgorithmOver20Steps) {
  test::Fixture fx("famo.safetensors");
  const Tensor &before = fx.at("before"), &after = fx.at("after");
  FamoConfig cfg;  // OfficialFAMO's settings, from the fixture's params
  cfg.lr = fx.param_f("famo.lr");
  cfg.weight_decay = fx.param_f("famo.weight_decay");
  cfg.beta1 = fx.param_fv("famo.betas").at(0);
  cfg.beta2 = fx.param_fv("famo.betas").at(1);
  cfg.adam_eps = fx.param_f("famo.adam_eps");
  cfg.eps = fx.param_f("famo.eps");
  Famo famo({"task", "kl", "feat"}, cfg);
  for (int64_t s = 0; s < before.size(0); ++s) {
    std::string step = "step " + std::to_string(s);
    test::expect_close(famo.weights(), narrow(fx.at("z_before"), 0, s, 1).view({3}), 1e-5, 1e-7,
                       step + " z before");
    std::vector<Tensor> L = row_losses(before, s, true);
    Tensor loss = famo.weighted_loss(L);
    test::expect_close(loss.view({1}), narrow(fx.at("weighted_loss"), 0, s, 1), 1e-5, 1e-7,
                       step + " weighted loss");
    loss.backward();
    std::vector<float> g;
    for (auto& l : L) g.push_back(l.grad().item());
    test::expect_close(Tensor::from_vector(g, {3}), narrow(fx.at("grad_losses"), 0, s, 1).view({3}),
                       1e-5, 1e-7, step + " dloss/dL");
    famo.update(row_losses(after, s, false));
    test::expect_close(famo.weights(), narrow(fx.at("z_after"), 0, s, 1).view({3}), 1e-5, 1e-7,
                       step + " z after");
  }
}

TEST(Famo, WeightsSumToOneAndFrozenObjectiveGainsWeight) {
  Famo famo({"a", "b", "c"});
  std::vector<float> l = {1.f, 2.f, 0.5f};
  for (int s = 0; s < 30; ++s) {
    std::vector<Tensor> L;
    for (float x : l) L.push_back(Tensor::from_vector({x}, {}));
    famo.weighted_loss(L);
    l[0] *= 0.9f;  // improving
    l[1] *= 0.9f;  // improving
    // l[2] frozen
    std::vector<Tensor> A;
    for (float x : l) A.push_back(Tensor::from_vector({x}, {}));
    famo.update(A);
    auto z = famo.weights().to_vector();
    EXPECT_NEAR(z[0] + z[1] + z[2], 1.0, 1e-6);
  }
  auto z = famo.weights().to_vector();
  EXPECT_GT(z[2], 1.f / 3.f + 0.05f);
  EXPECT_GT(z[2], z[0]);
  EXPECT_GT(z[2], z[1]);
}

TEST(Famo, GradientIsThatOfTheNormalisedWeightedSum) {
  // d/dtheta of the FAMO loss equals d/dtheta of sum_i a_i L_i(theta), with a_i summing to 1.
  Tensor theta = test::randn({4}, 3);
  theta.set_requires_grad(true);
  Tensor theta2 = theta.detach().clone();
  theta2.set_requires_grad(true);
  auto losses = [](const Tensor& t) {
    return std::vector<Tensor>{add_scalar(sum(square(t)), 0.1f), add_scalar(sum(exp(t)), 0.f),
                               add_scalar(mean(abs(scale(t, 3.f))), 0.5f)};
  };
  Famo famo({"a", "b", "c"});
  // Move w away from 0 so the weights are not uniform.
  famo.logits().copy_(Tensor::from_vector({0.3f, -0.2f, 0.5f}, {3}));
  famo.weighted_loss(losses(theta)).backward();
  Tensor a = famo.last_loss_weights();
  EXPECT_NEAR(sum(a).item(), 1.0, 1e-6);
  auto av = a.to_vector();
  auto L2 = losses(theta2);
  Tensor weighted = add(add(scale(L2[0], av[0]), scale(L2[1], av[1])), scale(L2[2], av[2]));
  weighted.backward();
  test::expect_close(theta.grad(), theta2.grad(), 1e-5, 1e-7, "FAMO gradient vs sum a_i grad L_i");
  EXPECT_FALSE(famo.logits().requires_grad());
  EXPECT_FALSE(famo.logits().grad().defined());  // w gets no gradient from the student loss
}

TEST(Famo, NonPositiveLossIsAnErrorNamingTheObjective) {
  Famo famo({"task", "kl", "feat"});
  std::vector<Tensor> L = {Tensor::scalar(1.f), Tensor::scalar(-0.5f), Tensor::scalar(1.f)};
  try {
    famo.weighted_loss(L);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'kl'"), std::string::npos) << e.what();
  }
  std::vector<Tensor> nan = {Tensor::scalar(1.f), Tensor::scalar(1.f), Tensor::scalar(NAN)};
  EXPECT_THROW(famo.weighted_loss(nan), Error);
  EXPECT_THROW(famo.weighted_loss({Tensor::scalar(1.f)}), Error);
  EXPECT_THROW(famo.update({Tensor::scalar(1.f), Tensor::scalar(1.f), Tensor::scalar(1.f)}), Error);
  EXPECT_THROW(Famo({"a"}, FamoConfig{.lr = -1.f}), Error);
}

}  // namespace
}  // namespace mokd
