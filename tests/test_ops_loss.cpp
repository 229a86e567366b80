// Losses: forward values and input gradients against PyTorch (tools/reference/ops_loss.py writes
// tests/data/ops_loss.safetensors; smoothing, temperatures and beta come from its params),
// finite-difference gradient checks and bad input.
#include <cmath>

#include "tests/test_util.h"

namespace mokd {
namespace {

using test::expect_error;
using test::gradcheck;
using test::randn;
using test::rel_error;
using test::requires_grad;

// Scalar losses: compare the one value (fixtures store shape []).
void expect_scalar(const Tensor& loss, const Tensor& expected, const char* what) {
  EXPECT_EQ(loss.shape(), Shape{}) << what;
  double a = loss.item(), e = expected.item();
  EXPECT_LT(std::fabs(a - e) / std::max(std::fabs(e), 1e-30), 1e-5)
      << what << ": " << a << " vs PyTorch " << e;
}

class OpsLossFixture : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { f_ = new test::Fixture("ops_loss.safetensors"); }
  static void TearDownTestSuite() {
    delete f_;
    f_ = nullptr;
  }
  const Tensor& at(const std::string& k) { return f_->at(k); }
  static test::Fixture* f_;
};
test::Fixture* OpsLossFixture::f_ = nullptr;

TEST_F(OpsLossFixture, CrossEntropyHardLabels) {
  for (std::string c : {"ce", "ce_ls"}) {
    const float s = f_->param_f("ce.label_smoothing." + c);
    const std::string loss_key = c + "_loss", grad_key = c + "_grad";
    Tensor x = requires_grad(at("ce_logits").clone());
    Tensor loss = cross_entropy(x, at("ce_labels"), s);
    expect_scalar(loss, at(loss_key), loss_key.c_str());
    loss.backward();
    EXPECT_LT(rel_error(x.grad(), at(grad_key)), 1e-5) << grad_key;
  }
}

TEST_F(OpsLossFixture, CrossEntropySoftTargets) {
  Tensor x = requires_grad(at("ce_logits").clone()), q = requires_grad(at("soft_probs").clone());
  Tensor loss = cross_entropy_soft(x, q);
  expect_scalar(loss, at("soft_loss"), "soft_loss");
  loss.backward();
  EXPECT_LT(rel_error(x.grad(), at("soft_grad_logits")), 1e-5);
  EXPECT_LT(rel_error(q.grad(), at("soft_grad_probs")), 1e-5);
}

TEST_F(OpsLossFixture, KlDivTemperatures) {
  const std::vector<int64_t> temperatures = f_->param_iv("kl.temperatures");
  for (int64_t ti : temperatures) {
    const float T = static_cast<float>(ti);
    const std::string loss_key = "kl_T" + std::to_string(ti) + "_loss",
                      grad_key = "kl_T" + std::to_string(ti) + "_grad";
    Tensor s = requires_grad(at("kl_student").clone()), t = requires_grad(at("kl_teacher").clone());
    Tensor loss = kl_div(s, t, T);
    expect_scalar(loss, at(loss_key), loss_key.c_str());
    loss.backward();
    EXPECT_LT(rel_error(s.grad(), at(grad_key)), 1e-5) << grad_key;
    EXPECT_FALSE(t.grad().defined()) << "the teacher must get no gradient";
  }
}

TEST_F(OpsLossFixture, SmoothL1AndMse) {
  Tensor a = requires_grad(at("sl1_a").clone()), b = requires_grad(at("sl1_b").clone());
  Tensor l1 = smooth_l1(a, b, f_->param_f("smooth_l1.beta"));
  expect_scalar(l1, at("sl1_loss"), "sl1_loss");
  l1.backward();
  EXPECT_LT(rel_error(a.grad(), at("sl1_grad_a")), 1e-5);
  EXPECT_LT(rel_error(b.grad(), at("sl1_grad_b")), 1e-5);

  Tensor a2 = requires_grad(at("sl1_a").clone()), b2 = requires_grad(at("sl1_b").clone());
  Tensor l2 = mse(a2, b2);
  expect_scalar(l2, at("mse_loss"), "mse_loss");
  l2.backward();
  EXPECT_LT(rel_error(a2.grad(), at("mse_grad_a")), 1e-5);
  EXPECT_LT(rel_error(b2.grad(), at("mse_grad_b")), 1e-5);
}

// ---- finite differences ----

TEST(OpsLossGrad, CrossEntropy) {
  Tensor x = requires_grad(randn({5, 7}, 1, 2.f));
  Tensor labels = Tensor::from_vector_i64({0, 6, 3, 3, 1}, {5});
  for (float s : {0.f, 0.2f})
    gradcheck([&](const std::vector<Tensor>& v) { return cross_entropy(v[0], labels, s); }, {x}, {},
              "cross_entropy s = " + std::to_string(s));
  Tensor q = requires_grad(softmax(randn({5, 7}, 2)).detach());
  gradcheck([](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], v[1]); }, {x, q}, {},
            "cross_entropy_soft");
}

TEST(OpsLossGrad, KlDivStudentOnly) {
  Tensor s = requires_grad(randn({3, 9}, 3, 2.f));
  Tensor t = randn({3, 9}, 4, 3.f);
  for (float T : {1.f, 4.f})
    gradcheck([&](const std::vector<Tensor>& v) { return kl_div(v[0], t, T); }, {s}, {},
              "kl_div T = " + std::to_string(T));
  // Identical logits: zero loss, zero gradient.
  Tensor s2 = requires_grad(t.clone());
  Tensor loss = kl_div(s2, t, 2.f);
  EXPECT_NEAR(loss.item(), 0.f, 1e-6);
  loss.backward();
  for (float g : s2.grad().to_vector()) EXPECT_NEAR(g, 0.f, 1e-6);
}

TEST(OpsLossGrad, SmoothL1BothSidesOfBetaAndMse) {
  // Differences 0.05 .. 2 against beta = 0.7: the quadratic and the linear part (no point within
  // the finite-difference step of the kink).
  Tensor a = requires_grad(Tensor::from_vector({0.05f, -0.3f, 0.6f, 0.9f, -1.5f, 2.f, 0.2f}, {7}));
  Tensor b = requires_grad(Tensor::zeros({7}));
  gradcheck([](const std::vector<Tensor>& v) { return smooth_l1(v[0], v[1], 0.7f); }, {a, b}, {},
            "smooth_l1");
  gradcheck([](const std::vector<Tensor>& v) { return mse(v[0], v[1]); },
            {requires_grad(randn({3, 5}, 5)), requires_grad(randn({3, 5}, 6))}, {}, "mse");
  // The value on both sides, written out: mean(0.5 d^2 / beta | |d| - beta / 2).
  double expect = 0;
  for (float d : {0.05f, -0.3f, 0.6f, 0.9f, -1.5f, 2.f, 0.2f}) {
    double ad = std::fabs(d);
    expect += ad < 0.7 ? 0.5 * ad * ad / 0.7 : ad - 0.35;
  }
  EXPECT_NEAR(smooth_l1(a, b, 0.7f).item(), expect / 7, 1e-6);
}

// ---- bad input ----

TEST(OpsLossBadInput, MessagesNameOpAndShapes) {
  Tensor x = randn({4, 5}, 7);
  Tensor labels = Tensor::from_vector_i64({0, 1, 2, 3}, {4});
  expect_error([&] { cross_entropy(randn({5}, 1), labels); }, {"cross_entropy", "[5]"});
  expect_error(
      [&] {
        cross_entropy(x, Tensor::from_vector_i64({0, 1, 2}, {3}));
      },
      {"cross_entropy", "3 labels", "[4, 5]"});
  expect_error(
      [&] {
        cross_entropy(x, Tensor::from_vector_i64({0, 1, 7, 2}, {4}));
      },
      {"cross_entropy", "label 7", "index 2"});
  expect_error(
      [&] {
        cross_entropy(x, Tensor::from_vector_i64({0, -1, 0, 2}, {4}));
      },
      {"cross_entropy", "label -1", "index 1"});
  expect_error(
      [&] {
        cross_entropy(x, Tensor::from_vector({0, 1, 2, 3}, {4}));
      },
      {"cross_entropy", "i64"});
  expect_error([&] { cross_entropy(x, labels, 1.f); }, {"cross_entropy", "label_smoothing"});
  expect_error([&] { cross_entropy(x, labels, -0.1f); }, {"cross_entropy", "label_smoothing"});
  expect_error(
      [&] {
        cross_entropy_soft(x, randn({4, 6}, 2));
      },
      {"cross_entropy_soft", "[4, 5]", "[4, 6]"});
  expect_error([&] { kl_div(x, randn({4, 6}, 3), 1.f); }, {"kl_div", "[4, 5]", "[4, 6]"});
  expect_error([&] { kl_div(x, x, 0.f); }, {"kl_div", "temperature"});
  expect_error(
      [&] {
        kl_div(randn({2, 3, 4}, 4), randn({2, 3, 4}, 5), 1.f);
      },
      {"kl_div", "[2, 3, 4]"});
  expect_error([&] { smooth_l1(x, randn({5, 4}, 6)); }, {"smooth_l1", "[4, 5]", "[5, 4]"});
  expect_error([&] { smooth_l1(x, x, 0.f); }, {"smooth_l1", "beta"});
  expect_error([&] { mse(x, randn({4}, 7)); }, {"mse", "[4, 5]", "[4]"});
}

}  // namespace
}  // namespace mokd
