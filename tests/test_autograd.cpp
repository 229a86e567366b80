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
