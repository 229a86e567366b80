// Autograd: accumulation through shared subexpressions, NoGrad, freed graphs, leaf grads.
#include "tests/test_util.h"

namespace mokd {
namespace {

TEST(Autograd, SharedSubexpressionAccumulates) {
  Tensor x = Tensor::from_vector({1.f, 2.f, 3.f}, {3});
  x.set_requires_grad(true);
  Tensor y = mul(x, x);       // used twice below
  Tensor z = sum(add(y, y));  // z = 2 sum x^2 -> dz/dx = 4x
  z.backward();
  auto g = x.grad().to_vector();
  EXPECT_FLOAT_EQ(g[0], 4.f);
  EXPECT_FLOAT_EQ(g[1], 8.f);
  EXPECT_FLOAT_EQ(g[2], 12.f);
}

// add's backward hands one gradient to both inputs: each leaf must still own its .grad (a fresh
// gradient is taken over without a copy, a shared one is copied), so that accumulating into one
// leaves the other alone.
TEST(Autograd, LeavesSharingAGradientOwnTheirOwnMemory) {
  Tensor a = Tensor::from_vector({1.f, 2.f}, {2});
  Tensor b = Tensor::from_vector({3.f, 4.f}, {2});
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  sum(add(a, b)).backward();
  ASSERT_NE(a.grad().raw_data(), b.grad().raw_data());
  sum(scale(a, 5.f)).backward();  // accumulates into a's gradient in place
  EXPECT_EQ(a.grad().to_vector(), (std::vector<float>{6.f, 6.f}));
  EXPECT_EQ(b.grad().to_vector(), (std::vector<float>{1.f, 1.f}));
}

TEST(Autograd, GradientsAccumulateAcrossBackwardCallsUntilZeroed) {
  Tensor x = Tensor::from_vector({1.f, -2.f}, {2});
  x.set_requires_grad(true);
  sum(scale(x, 3.f)).backward();
  sum(scale(x, 3.f)).backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{6.f, 6.f}));
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradRecordsNothing) {
  Tensor x = Tensor::from_vector({1.f, 2.f}, {2});
  x.set_requires_grad(true);
  Tensor y;
  {
    NoGrad ng;
    EXPECT_FALSE(grad_enabled());
    y = sum(mul(x, x));
  }
  EXPECT_TRUE(grad_enabled());
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(y.is_leaf());
  EXPECT_THROW(y.backward(), Error);
}

TEST(Autograd, BackwardTwiceWithoutRetainIsAClearError) {
  Tensor x = Tensor::from_vector({1.f, 2.f}, {2});
  x.set_requires_grad(true);
  Tensor y = sum(mul(x, x));
  y.backward();
  try {
    y.backward();
    FAIL() << "second backward should throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("second time"), std::string::npos) << e.what();
  }
}

TEST(Autograd, RetainGraphAllowsASecondBackward) {
  Tensor x = Tensor::from_vector({1.f, 2.f}, {2});
  x.set_requires_grad(true);
  Tensor y = sum(mul(x, x));
  y.backward(true);
  y.backward();
  EXPECT_EQ(x.grad().to_vector(), (std::vector<float>{4.f, 8.f}));
}

TEST(Autograd, SavedTensorsAreReleasedDuringBackward) {
  Allocator& a = cpu_allocator();
  Tensor x = test::randn({256, 256}, 1);
  x.set_requires_grad(true);
  size_t before = a.bytes_in_use();
  Tensor y = sum(exp(mul(x, x)));  // mul saves x; exp saves x*x (256 KiB)
  size_t with_graph = a.bytes_in_use();
  EXPECT_GT(with_graph, before + 256 * 256 * 4);
  y.backward();
  // What remains: x's gradient (256 KiB) and y; the intermediates are gone.
  size_t after = a.bytes_in_use();
  EXPECT_LE(after, before + 256 * 256 * 4 + 64);
}

TEST(Autograd, LeafOnlyMarking) {
  Tensor x = Tensor::from_vector({1.f}, {1});
  x.set_requires_grad(true);
  Tensor y = scale(x, 2.f);
  EXPECT_FALSE(y.is_leaf());
  EXPECT_THROW(y.set_requires_grad(false), Error);
  Tensor i = Tensor::from_vector_i64({1}, {1});
  EXPECT_THROW(i.set_requires_grad(true), Error);
}

TEST(Autograd, DetachCutsTheGraph) {
  Tensor x = Tensor::from_vector({2.f}, {1});
  x.set_requires_grad(true);
  Tensor y = mul(x, x.detach());  // d/dx = x (not 2x)
  sum(y).backward();
  EXPECT_FLOAT_EQ(x.grad().item(), 2.f);
}

}  // namespace
}  // namespace mokd

namespace mokd {
namespace {

// LeafReadyHook fires for each leaf once its gradient is final, while backward still runs: here
// w2's (used last in the forward) before w1's has even been computed; a leaf used twice fires
// once, after both contributions.
TEST(Autograd, LeafReadyHookFiresWhenALeafsGradientIsFinal) {
  Tensor x = Tensor::from_vector({1.f, 2.f}, {2});
  Tensor w1 = Tensor::from_vector({3.f, 4.f}, {2}).set_requires_grad(true);
  Tensor w2 = Tensor::from_vector({5.f, 6.f}, {2}).set_requires_grad(true);
  Tensor shared = Tensor::from_vector({0.5f, 0.25f}, {2}).set_requires_grad(true);
  Tensor h = mul(mul(w1, x), shared);
  Tensor y = sum(mul(mul(w2, h), shared));
  std::vector<std::string> order;
  std::vector<bool> w1_had_grad;
  std::vector<std::vector<float>> shared_grad_then;
  {
    LeafReadyHook hook([&](const std::shared_ptr<TensorImpl>& leaf) {
      if (leaf == w1.impl_ptr()) order.push_back("w1");
      if (leaf == w2.impl_ptr()) {
        order.push_back("w2");
        w1_had_grad.push_back(w1.grad().defined());
      }
      if (leaf == shared.impl_ptr()) {
        order.push_back("shared");
        shared_grad_then.push_back(shared.grad().to_vector());
      }
    });
    y.backward();
  }
  ASSERT_EQ(order.size(), 3u) << "each leaf once";
  EXPECT_EQ(order[0], "w2");
  EXPECT_EQ(order.back(), "w1");
  ASSERT_EQ(w1_had_grad.size(), 1u);
  EXPECT_FALSE(w1_had_grad[0]) << "w2 was ready before w1's gradient existed";
  // d y / d shared_i = w2_i * w1_i * x_i * shared_i * 2: both uses accumulated when it fired.
  ASSERT_EQ(shared_grad_then.size(), 1u);
  EXPECT_FLOAT_EQ(shared_grad_then[0][0], 2.f * 5.f * 3.f * 1.f * 0.5f);
  EXPECT_FLOAT_EQ(shared_grad_then[0][1], 2.f * 6.f * 4.f * 2.f * 0.25f);
  // Without a hook nothing is called; the scope restored the previous (none).
  Tensor z = sum(mul(w1, x));
  z.backward();
  EXPECT_EQ(order.size(), 3u);
}

}  // namespace
}  // namespace mokd
