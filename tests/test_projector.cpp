// Projectors: stay on the Stiefel manifold through large optimizer steps, bounded bilinear loss,
// gradients.
#include "mokd/optim.h"
#include "mokd/projector.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

TEST(Projector, RetractionGivesThePolarFactor) {
  // For M = Q S with Q orthonormal and S symmetric positive definite, the polar factor is Q.
  Tensor q = test::randn({9, 4}, 1);
  retract_to_stiefel(q);
  EXPECT_LT(stiefel_error(q), 1e-5f);
  Tensor s = Tensor::from_vector(
      {2.0f, 0.3f, 0.f, 0.f, 0.3f, 1.5f, 0.1f, 0.f, 0.f, 0.1f, 0.5f, 0.f, 0.f, 0.f, 0.f, 1.2f},
      {4, 4});
  Tensor m = matmul(q, s);
  retract_to_stiefel(m);
  test::expect_close(m, q, 1e-4, 1e-5, "polar factor");
}

class StiefelSteps : public ::testing::TestWithParam<std::pair<int, int>> {};

TEST_P(StiefelSteps, StaysOnTheManifoldAfter100LargeSteps) {
  auto [ds, dt] = GetParam();
  Generator gen(3, Stream::Init);
  StiefelProjector p(ds, dt, gen);
  EXPECT_LT(stiefel_error(p.weight()), 1e-5f);
  AdamW opt({ParamGroup{{p.weight()}, 0.5f, 0.05f}});
  for (int step = 0; step < 100; ++step) {
    Tensor zs = test::randn({8, ds}, 100 + step);
    Tensor target = test::randn({8, dt}, 200 + step);
    opt.zero_grad();
    smooth_l1(p.forward(zs), target).backward();
    opt.step();
    p.retract();
    ASSERT_LT(stiefel_error(p.weight()), 1e-5f) << "step " << step;
  }
}

INSTANTIATE_TEST_SUITE_P(TallAndWide, StiefelSteps,
                         ::testing::Values(std::make_pair(16, 48), std::make_pair(48, 16),
                                           std::make_pair(7, 7), std::make_pair(64, 192)));

TEST(Projector, StiefelForwardGradients) {
  Generator gen(5, Stream::Init);
  StiefelProjector p(5, 9, gen);
  Tensor zs = test::randn({3, 5}, 6);
  zs.set_requires_grad(true);
  test::gradcheck([&](const std::vector<Tensor>& v) { return linear(v[0], v[1], Tensor()); },
                  {zs, p.weight()}, {}, "projector forward");
}

TEST(Projector, BilinearLossIsBoundedAndDifferentiable) {
  Generator gen(7, Stream::Init);
  BilinearProjector p(12, 20, 6, gen);
  float lo = 10.f, hi = -10.f;
  for (int s = 0; s < 50; ++s) {
    Tensor zs = test::randn({4, 12}, 300 + s, 5.f), zt = test::randn({4, 20}, 400 + s, 0.1f);
    float l = p.loss(zs, zt).item();
    lo = std::min(lo, l);
    hi = std::max(hi, l);
    ASSERT_GE(l, 0.f);
    ASSERT_LE(l, 2.f);
  }
  EXPECT_LT(lo, hi);
  // Worst cases: a metric of one sign, features aligned with the subspaces.
  AdamW opt({ParamGroup{{p.named_parameters()[0].second, p.named_parameters()[1].second,
                         p.named_parameters()[2].second},
                        0.3f,
                        0.f}});
  Tensor zs = test::randn({4, 12}, 9), zt = test::randn({4, 20}, 10);
  for (int s = 0; s < 60; ++s) {  // minimising drives the loss toward 0 but never below
    opt.zero_grad();
    Tensor l = p.loss(zs, zt);
    l.backward();
    opt.step();
    p.retract();
    ASSERT_GE(p.loss(zs, zt).item(), -1e-6f);
  }
  EXPECT_LT(p.loss(zs, zt).item(), 1.f);
  EXPECT_NEAR(sum(abs(p.metric())).item(), 1.f, 1e-5f);
  EXPECT_LT(stiefel_error(p.named_parameters()[0].second), 1e-5f);
}

TEST(Projector, BadDimsAreErrors) {
  Generator gen(1, Stream::Init);
  StiefelProjector p(4, 8, gen);
  EXPECT_THROW(p.forward(test::randn({2, 5}, 1)), Error);
  EXPECT_THROW(BilinearProjector(4, 8, 5, gen), Error);
  EXPECT_THROW(StiefelProjector(0, 8, gen), Error);
}

}  // namespace
}  // namespace mokd
