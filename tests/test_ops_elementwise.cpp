// Elementwise, reduction and shape ops: finite-difference gradients, PyTorch forward results
// (tests/data/ops_elementwise.safetensors, from tools/make_reference.py ops_elementwise), errors.
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::expect_error;
using test::gradcheck;
using test::randn;
using test::requires_grad;
using Inputs = std::vector<Tensor>;

// Values at least `margin` away from zero (for ops with a kink or pole at 0).
Tensor away_from_zero(const Shape& s, uint64_t seed, float margin = 0.2f) {
  auto v = randn(s, seed).to_vector();
  for (float& x : v) x = x >= 0 ? x + margin : x - margin;
  return Tensor::from_vector(v, s);
}

TEST(OpsElementwise, BinaryGradientsWithBroadcasting) {
  struct Case {
    Shape a, b;
  };
  std::vector<Case> cases = {
      {{3, 5}, {3, 5}}, {{3, 1, 5}, {4, 5}}, {{2, 3}, {}}, {{1}, {3, 7}}, {{2, 1, 3}, {2, 4, 1}}};
  for (auto& c : cases) {
    std::string what = shape_str(c.a) + " op " + shape_str(c.b);
    Tensor a = requires_grad(randn(c.a, 1)), b = requires_grad(away_from_zero(c.b, 2, 0.5f));
    gradcheck([](const Inputs& x) { return add(x[0], x[1]); }, {a, b}, {}, "add " + what);
    gradcheck([](const Inputs& x) { return sub(x[0], x[1]); }, {a, b}, {}, "sub " + what);
    gradcheck([](const Inputs& x) { return mul(x[0], x[1]); }, {a, b}, {}, "mul " + what);
    gradcheck([](const Inputs& x) { return div(x[0], x[1]); }, {a, b}, {}, "div " + what);
  }
}

TEST(OpsElementwise, BinaryGradientOnlyToInputsThatNeedIt) {
  Tensor a = requires_grad(randn({3}, 1));
  Tensor b = randn({3}, 2);
  sum(mul(a, b)).backward();
  EXPECT_TRUE(a.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

TEST(OpsElementwise, UnaryGradients) {
  Tensor x = requires_grad(randn({3, 7}, 3));
  Tensor nz = requires_grad(away_from_zero({3, 7}, 4));
  Tensor pos = requires_grad(test::uniform({2, 5}, 5, 0.5f, 2.f));
  gradcheck([](const Inputs& v) { return exp(v[0]); }, {x}, {}, "exp");
  gradcheck([](const Inputs& v) { return log(v[0]); }, {pos}, {}, "log");
  gradcheck([](const Inputs& v) { return sqrt(v[0]); }, {pos}, {}, "sqrt");
  gradcheck([](const Inputs& v) { return square(v[0]); }, {x}, {}, "square");
  gradcheck([](const Inputs& v) { return abs(v[0]); }, {nz}, {}, "abs");
  gradcheck([](const Inputs& v) { return relu(v[0]); }, {nz}, {}, "relu");
  gradcheck([](const Inputs& v) { return gelu(v[0]); }, {x}, {}, "gelu");
  gradcheck([](const Inputs& v) { return neg(v[0]); }, {x}, {}, "neg");
  gradcheck([](const Inputs& v) { return scale(v[0], -2.5f); }, {x}, {}, "scale");
  gradcheck([](const Inputs& v) { return add_scalar(v[0], 3.f); }, {x}, {}, "add_scalar");
}

TEST(OpsElementwise, ForwardMatchesTorch) {
  auto fx = test::load_fixture("ops_elementwise.safetensors");
  const Tensor &a = fx.at("a"), &b = fx.at("b"), &x = fx.at("x"), &pos = fx.at("pos");
  test::expect_close(add(a, b), fx.at("add"), 1e-6, 1e-7, "add");
  test::expect_close(sub(a, b), fx.at("sub"), 1e-6, 1e-7, "sub");
  test::expect_close(mul(a, b), fx.at("mul"), 1e-6, 1e-7, "mul");
  test::expect_close(div(a, add_scalar(abs(b), 0.5f)), fx.at("div"), 1e-6, 1e-7, "div");
  test::expect_close(exp(x), fx.at("exp"), 1e-6, 1e-7, "exp");
  test::expect_close(log(pos), fx.at("log"), 1e-6, 1e-7, "log");
  test::expect_close(sqrt(pos), fx.at("sqrt"), 1e-6, 1e-7, "sqrt");
  test::expect_close(gelu(x), fx.at("gelu"), 1e-6, 1e-7, "gelu");
  test::expect_close(relu(x), fx.at("relu"), 0, 0, "relu");
  test::expect_close(abs(x), fx.at("abs"), 0, 0, "abs");
  test::expect_close(square(x), fx.at("square"), 1e-6, 0, "square");
}

TEST(OpsReduce, ForwardMatchesTorch) {
  auto fx = test::load_fixture("ops_elementwise.safetensors");
  const Tensor& r = fx.at("r");
  test::expect_close(sum(r, {1}), fx.at("sum_1"), 1e-6, 1e-6, "sum dim 1");
  test::expect_close(mean(r, {0, -1}, true), fx.at("mean_02_keep"), 1e-6, 1e-6, "mean keepdim");
  test::expect_close(sum(r), fx.at("sum_all"), 1e-6, 1e-6, "sum all");
  EXPECT_EQ(sum(r).dim(), 0);
}

TEST(OpsReduce, Gradients) {
  Tensor r = requires_grad(randn({2, 3, 5}, 6));
  gradcheck([](const Inputs& v) { return sum(v[0], {1}); }, {r}, {}, "sum dim 1");
  gradcheck([](const Inputs& v) { return sum(v[0], {0, 2}, true); }, {r}, {}, "sum keepdim");
  gradcheck([](const Inputs& v) { return mean(v[0], {-1}); }, {r}, {}, "mean last");
  gradcheck([](const Inputs& v) { return mean(v[0]); }, {r}, {}, "mean all");
  gradcheck([](const Inputs& v) { return sum(v[0]); }, {r}, {}, "sum all");
}

TEST(OpsReduce, ArgmaxFirstOnTies) {
  Tensor x = Tensor::from_vector({1, 3, 3, 0, -1, -2, -5, -1}, {2, 4});
  EXPECT_EQ(argmax(x).to_vector_i64(), (std::vector<int64_t>{1, 0}));
}

TEST(OpsShape, ForwardMatchesTorch) {
  auto fx = test::load_fixture("ops_elementwise.safetensors");
  const Tensor& r = fx.at("r");
  test::expect_close(permute(r, {2, 0, 1}), fx.at("permute_201"), 0, 0, "permute");
  test::expect_close(narrow(r, 2, 1, 2), fx.at("narrow_2_1_2"), 0, 0, "narrow");
  test::expect_close(concat({r, scale(narrow(r, 1, 0, 2), 2.f)}, 1), fx.at("concat_1"), 0, 0,
                     "concat");
  EXPECT_EQ(reshape(r, {4, -1}).shape(), (Shape{4, 6}));
  EXPECT_EQ(flatten(r).shape(), (Shape{2, 12}));
  EXPECT_EQ(transpose(r, 0, 2).shape(), (Shape{4, 3, 2}));
}

TEST(OpsShape, Gradients) {
  Tensor r = requires_grad(randn({2, 3, 5}, 7));
  Tensor s = requires_grad(randn({2, 1, 5}, 8));
  gradcheck([](const Inputs& v) { return reshape(v[0], {5, 6}); }, {r}, {}, "reshape");
  gradcheck([](const Inputs& v) { return permute(v[0], {2, 0, 1}); }, {r}, {}, "permute");
  gradcheck([](const Inputs& v) { return transpose(v[0], 1, 2); }, {r}, {}, "transpose");
  gradcheck([](const Inputs& v) { return narrow(v[0], 1, 1, 2); }, {r}, {}, "narrow");
  gradcheck([](const Inputs& v) { return concat({v[0], v[1], v[0]}, 1); }, {r, s}, {}, "concat");
  gradcheck([](const Inputs& v) { return flatten(v[0], 1); }, {r}, {}, "flatten");
  // A non-contiguous input to reshape (copy path).
  gradcheck([](const Inputs& v) { return reshape(transpose(v[0], 0, 2), {-1}); }, {r}, {},
            "reshape of transpose");
  // cast through f64 and back (exact both ways), of a strided input.
  gradcheck(
      [](const Inputs& v) { return cast(cast(transpose(v[0], 0, 2), DType::F64), DType::F32); },
      {r}, {}, "cast");
}

// cast to bf16: values rounded once; the gradient comes back in the source dtype. concat of an
// f32 parameter with a bf16 activation is bf16, and each input's gradient has its own dtype.
TEST(OpsShape, CastAndMixedConcatGiveGradientsInTheInputsDtypes) {
  Tensor x = requires_grad(randn({3, 4}, 9));
  Tensor y = cast(x, DType::BF16);
  EXPECT_EQ(y.dtype(), DType::BF16);
  EXPECT_EQ(y.to_vector(), x.detach().to(DType::BF16).to_vector());
  Tensor act = requires_grad(randn({2, 4}, 10).to(DType::BF16));
  Tensor cat = concat({x, act}, 0);
  EXPECT_EQ(cat.dtype(), DType::BF16);
  sum(cast(mul(cat, randn({5, 4}, 11)), DType::F32)).backward();
  ASSERT_TRUE(x.grad().defined() && act.grad().defined());
  EXPECT_EQ(x.grad().dtype(), DType::F32);
  EXPECT_EQ(act.grad().dtype(), DType::BF16);
  // d/dx of sum(cat * r) is r (rounded to bf16 by the bf16 product), rows 0..2.
  Tensor r = randn({5, 4}, 11).to(DType::BF16).to(DType::F32);
  test::expect_close(x.grad(), narrow(r, 0, 0, 3), 0, 0, "grad of the f32 input");
  expect_error([&] { cast(Tensor::zeros({2}, DType::I64), DType::F32); }, {"cast", "i64"});
  expect_error([&] { cast(x, DType::I64); }, {"cast", "i64"});
}

TEST(OpsErrors, MessagesNameOpAndShapes) {
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4});
  expect_error([&] { add(a, b); }, {"add", "[2, 3]", "[4]"});
  expect_error([&] { mul(a, Tensor::zeros({3, 2})); }, {"mul", "[2, 3]", "[3, 2]"});
  expect_error(
      [&] {
        add(a, Tensor::zeros({2, 3}, DType::I64));
      },
      {"add", "i64[2, 3]", "f32[2, 3]"});
  expect_error([&] { add(a, Tensor::zeros({2, 3}, DType::F64)); }, {"add", "f64[2, 3]"});
  expect_error([&] { sum(a, {2}); }, {"sum", "dim 2", "rank 2"});
  expect_error([&] { narrow(a, 1, 2, 5); }, {"narrow", "[2, 3]"});
  expect_error([&] { concat({a, Tensor::zeros({3, 3})}, 1); }, {"concat", "[2, 3]", "[3, 3]"});
  expect_error([&] { reshape(a, {5}); }, {"[2, 3]", "[5]"});
  expect_error([&] { permute(a, {0, 2}); }, {"permute", "dim 2"});
  expect_error([&] { exp(Tensor::zeros({2}, DType::I64)); }, {"exp", "i64[2]"});
}

}  // namespace
}  // namespace mokd
