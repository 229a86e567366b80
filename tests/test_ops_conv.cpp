// NHWC conv2d, batch_norm2d and pooling: finite-difference gradients, PyTorch forward results and
// gradients (tests/data/ops_conv.safetensors, from tools/make_reference.py ops_conv), bad inputs.
#include <algorithm>
#include <numeric>
#include <random>

#include "tests/test_util.h"

namespace mokd {
namespace {

using test::expect_error;
using test::gradcheck;
using test::randn;
using test::rel_error;
using test::requires_grad;
using Inputs = std::vector<Tensor>;

Conv2dParams conv_params(int stride_h, int stride_w, int pad_h, int pad_w, int groups) {
  Conv2dParams p;
  p.stride_h = stride_h, p.stride_w = stride_w, p.pad_h = pad_h, p.pad_w = pad_w;
  p.groups = groups;
  return p;
}

Pool2dParams pool_params(int kh, int kw, int sh, int sw, int ph, int pw, bool include_pad = true) {
  Pool2dParams p;
  p.kernel_h = kh, p.kernel_w = kw, p.stride_h = sh, p.stride_w = sw, p.pad_h = ph, p.pad_w = pw;
  p.count_include_pad = include_pad;
  return p;
}

// Distinct values 0.02 apart in shuffled order: max pooling without ties, even after a
// finite-difference step.
Tensor distinct(const Shape& s, uint32_t seed) {
  std::vector<float> v(shape_numel(s));
  std::iota(v.begin(), v.end(), 0.f);
  std::shuffle(v.begin(), v.end(), std::mt19937(seed));
  for (float& x : v) x = x * 0.02f - 1.f;
  return Tensor::from_vector(v, s);
}

// ---- gradient checks ----

struct ConvCase {
  const char* name;
  Shape x, w;
  Conv2dParams p;
  bool bias;
};

TEST(OpsConv, Conv2dGradients) {
  // N=2, H=5, W=7 throughout: odd sizes, windows that fall off the edges unevenly.
  std::vector<ConvCase> cases = {
      {"k3 s1 p0", {2, 5, 7, 3}, {4, 3, 3, 3}, conv_params(1, 1, 0, 0, 1), false},
      {"k3 s1 p1 bias", {2, 5, 7, 3}, {4, 3, 3, 3}, conv_params(1, 1, 1, 1, 1), true},
      {"k3 s2 p0 bias", {2, 5, 7, 3}, {4, 3, 3, 3}, conv_params(2, 2, 0, 0, 1), true},
      {"k3 s2 p1", {2, 5, 7, 3}, {4, 3, 3, 3}, conv_params(2, 2, 1, 1, 1), false},
      {"k3x2 s(2,1) p(0,1) bias", {2, 5, 7, 3}, {4, 3, 2, 3}, conv_params(2, 1, 0, 1, 1), true},
      {"groups 2", {2, 5, 7, 4}, {6, 3, 3, 2}, conv_params(1, 1, 1, 1, 2), true},
      {"groups 2 s2", {2, 5, 7, 4}, {4, 3, 3, 2}, conv_params(2, 2, 1, 1, 2), false},
      {"depthwise", {2, 5, 7, 3}, {3, 3, 3, 1}, conv_params(1, 1, 1, 1, 3), true},
      {"depthwise x2 s2", {2, 5, 7, 3}, {6, 3, 3, 1}, conv_params(2, 2, 1, 1, 3), false},
      {"1x1", {2, 5, 7, 3}, {4, 1, 1, 3}, conv_params(1, 1, 0, 0, 1), true},
      {"1x1 groups 3", {2, 5, 7, 3}, {6, 1, 1, 1}, conv_params(1, 1, 0, 0, 3), false},
      {"1x1 s2", {2, 5, 7, 3}, {4, 1, 1, 3}, conv_params(2, 2, 0, 0, 1), false},
  };
  test::GradCheckOptions opt;
  opt.eps = 1e-2;  // conv is linear in x and in w: a larger step only reduces rounding noise
  uint64_t seed = 10;
  for (const auto& c : cases) {
    Tensor x = requires_grad(randn(c.x, seed++));
    Tensor w = requires_grad(randn(c.w, seed++, 0.5f));
    Conv2dParams p = c.p;
    if (c.bias) {
      Tensor b = requires_grad(randn({c.w[0]}, seed++));
      gradcheck([p](const Inputs& v) { return conv2d(v[0], v[1], v[2], p); }, {x, w, b}, opt,
                std::string("conv2d ") + c.name);
    } else {
      gradcheck([p](const Inputs& v) { return conv2d(v[0], v[1], Tensor(), p); }, {x, w}, opt,
                std::string("conv2d ") + c.name);
    }
  }
}

TEST(OpsConv, Conv2dGradientOnlyWhereNeeded) {
  Tensor x = randn({2, 5, 7, 3}, 1);
  Tensor w = requires_grad(randn({4, 3, 3, 3}, 2));
  Tensor b = randn({4}, 3);
  sum(conv2d(x, w, b, conv_params(1, 1, 1, 1, 1))).backward();
  EXPECT_TRUE(w.grad().defined());
  EXPECT_FALSE(x.grad().defined());
  EXPECT_FALSE(b.grad().defined());
}

TEST(OpsConv, Conv2dBatchParallelMatchesPerImage) {
  // Many images (the OpenMP-over-batch path) must give what each image alone gives.
  Tensor x = requires_grad(randn({9, 6, 5, 4}, 1)), w = requires_grad(randn({5, 3, 3, 4}, 2));
  Conv2dParams p = conv_params(1, 1, 1, 1, 1);
  Tensor y = conv2d(x, w, Tensor(), p);
  sum(y).backward();
  Tensor gw_all = w.grad().clone();
  for (int64_t n = 0; n < 9; ++n) {
    Tensor xn = x.detach().narrow_view(0, n, 1).contiguous();
    Tensor yn = conv2d(xn, w.detach(), Tensor(), p);
    EXPECT_LT(rel_error(yn, y.detach().narrow_view(0, n, 1).contiguous()), 1e-6) << "image " << n;
  }
  // sum over images of the per-image weight gradients
  Tensor acc = Tensor::zeros(w.shape());
  for (int64_t n = 0; n < 9; ++n) {
    Tensor wn = requires_grad(w.detach().clone());
    sum(conv2d(x.detach().narrow_view(0, n, 1).contiguous(), wn, Tensor(), p)).backward();
    acc = add(acc, wn.grad());
  }
  EXPECT_LT(rel_error(gw_all, acc), 1e-5);
}

TEST(OpsConv, BatchNormTrainGradients) {
  Tensor x = requires_grad(randn({2, 3, 5, 3}, 20, 1.5f));
  Tensor w = requires_grad(test::uniform({3}, 21, 0.5f, 1.5f));
  Tensor b = requires_grad(randn({3}, 22));
  gradcheck(
      [](const Inputs& v) {
        Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
        return batch_norm2d(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f);
      },
      {x, w, b}, {}, "batch_norm2d train");
}

TEST(OpsConv, BatchNormEvalGradients) {
  Tensor x = requires_grad(randn({2, 3, 5, 3}, 23));
  Tensor w = requires_grad(randn({3}, 24));
  Tensor b = requires_grad(randn({3}, 25));
  Tensor rm = randn({3}, 26), rv = test::uniform({3}, 27, 0.5f, 2.f);
  gradcheck(
      [&](const Inputs& v) { return batch_norm2d(v[0], v[1], v[2], rm, rv, false, 0.1f, 1e-5f); },
      {x, w, b}, {}, "batch_norm2d eval");
}

TEST(OpsConv, BatchNormRunningStatsUpdatedOnlyWhenTraining) {
  Tensor x = randn({2, 3, 4, 2}, 30, 2.f);
  Tensor w = Tensor::ones({2}), b = Tensor::zeros({2});
  Tensor rm = Tensor::zeros({2}), rv = Tensor::ones({2});
  batch_norm2d(x, w, b, rm, rv, false);
  EXPECT_EQ(rm.to_vector(), (std::vector<float>{0.f, 0.f}));
  EXPECT_EQ(rv.to_vector(), (std::vector<float>{1.f, 1.f}));
  {
    NoGrad ng;  // running statistics move in training mode even without gradients
    batch_norm2d(x, w, b, rm, rv, true, 0.5f);
  }
  // Independent check against the per-channel statistics computed here.
  auto v = x.to_vector();
  for (int c = 0; c < 2; ++c) {
    double s = 0, ss = 0;
    int n = 0;
    for (size_t i = c; i < v.size(); i += 2, ++n) s += v[i];
    double m = s / n;
    for (size_t i = c; i < v.size(); i += 2) ss += (v[i] - m) * (v[i] - m);
    EXPECT_NEAR(rm.to_vector()[c], 0.5 * m, 1e-5);
    EXPECT_NEAR(rv.to_vector()[c], 0.5 + 0.5 * ss / (n - 1), 1e-5);
  }
}

TEST(OpsConv, PoolGradients) {
  Tensor x = requires_grad(distinct({2, 5, 7, 3}, 40));
  Pool2dParams k3s2p1 = pool_params(3, 3, 2, 2, 1, 1);
  gradcheck([=](const Inputs& v) { return max_pool2d(v[0], k3s2p1); }, {x}, {},
            "max_pool2d k3s2p1");
  gradcheck([](const Inputs& v) { return max_pool2d(v[0], pool_params(2, 3, 1, 2, 0, 1)); }, {x},
            {}, "max_pool2d k2x3 s1x2 p0x1");
  gradcheck([=](const Inputs& v) { return avg_pool2d(v[0], k3s2p1); }, {x}, {},
            "avg_pool2d k3s2p1");
  gradcheck([](const Inputs& v) { return avg_pool2d(v[0], pool_params(3, 3, 2, 2, 1, 1, false)); },
            {x}, {}, "avg_pool2d k3s2p1 exclude pad");
  gradcheck([](const Inputs& v) { return avg_pool2d(v[0], pool_params(2, 2, 1, 1, 1, 0)); }, {x},
            {}, "avg_pool2d k2 s1 p1x0");
  gradcheck([](const Inputs& v) { return global_avg_pool2d(v[0]); }, {x}, {}, "global_avg_pool2d");
}

// ---- against PyTorch ----

TEST(OpsConv, Conv2dMatchesTorch) {
  test::Fixture f("ops_conv.safetensors");
  struct Case {
    const char* name;
    Conv2dParams p;
  };
  // Stride, padding and groups of each case from the fixture's params (CONV_CASES of
  // tools/reference/ops_conv.py).
  auto params = [&](const std::string& n) {
    const std::string c = "conv." + n + ".";
    const int s = static_cast<int>(f.param_i(c + "stride")),
              p = static_cast<int>(f.param_i(c + "padding"));
    return conv_params(s, s, p, p, static_cast<int>(f.param_i(c + "groups")));
  };
  std::vector<Case> cases;
  for (const char* n : {"conv_s1_p1_bias", "conv_s2_p0", "conv_s2_p1_g2", "conv_depthwise",
                        "conv_1x1_g2", "conv_7x7_s2_p3"})
    cases.push_back({n, params(n)});
  for (const auto& c : cases) {
    std::string n = c.name;
    ASSERT_TRUE(f.count(n + ".x")) << n;
    bool has_bias = f.count(n + ".b") > 0;
    Tensor x = requires_grad(f.at(n + ".x")), w = requires_grad(f.at(n + ".w"));
    Tensor b = has_bias ? requires_grad(f.at(n + ".b")) : Tensor();
    Tensor y = conv2d(x, w, b, c.p);
    EXPECT_LT(rel_error(y, f.at(n + ".y")), 1e-5) << n;
    sum(mul(y, f.at(n + ".r"))).backward();
    EXPECT_LT(rel_error(x.grad(), f.at(n + ".gx")), 1e-4) << n << " grad x";
    EXPECT_LT(rel_error(w.grad(), f.at(n + ".gw")), 1e-4) << n << " grad w";
    if (has_bias) EXPECT_LT(rel_error(b.grad(), f.at(n + ".gb")), 1e-4) << n << " grad b";
  }
}

TEST(OpsConv, BatchNormMatchesTorch) {
  test::Fixture f("ops_conv.safetensors");
  const float momentum = f.param_f("bn.momentum"), eps = f.param_f("bn.eps");
  Tensor x = requires_grad(f.at("bn_train.x")), w = requires_grad(f.at("bn_train.w")),
         b = requires_grad(f.at("bn_train.b"));
  Tensor rm = f.at("bn_train.rm0").clone(), rv = f.at("bn_train.rv0").clone();
  Tensor y = batch_norm2d(x, w, b, rm, rv, true, momentum, eps);
  EXPECT_LT(rel_error(y, f.at("bn_train.y")), 1e-5);
  EXPECT_LT(rel_error(rm, f.at("bn_train.rm1")), 1e-5) << "running_mean";
  EXPECT_LT(rel_error(rv, f.at("bn_train.rv1")), 1e-5) << "running_var";
  sum(mul(y, f.at("bn_train.r"))).backward();
  EXPECT_LT(rel_error(x.grad(), f.at("bn_train.gx")), 1e-4) << "grad x";
  EXPECT_LT(rel_error(w.grad(), f.at("bn_train.gw")), 1e-4) << "grad w";
  EXPECT_LT(rel_error(b.grad(), f.at("bn_train.gb")), 1e-4) << "grad b";

  Tensor rm0 = f.at("bn_train.rm0").clone(), rv0 = f.at("bn_train.rv0").clone();
  Tensor ye = batch_norm2d(f.at("bn_eval.x"), f.at("bn_train.w"), f.at("bn_train.b"), rm0, rv0,
                           false, momentum, eps);
  EXPECT_LT(rel_error(ye, f.at("bn_eval.y")), 1e-5) << "eval";
}

TEST(OpsConv, PoolsMatchTorch) {
  test::Fixture f("ops_conv.safetensors");
  // Kernel, stride, padding ([h, w]) and count_include_pad of each case from the fixture's params.
  auto params = [&](const std::string& n) {
    const std::string c = "pool." + n + ".";
    auto k = f.param_iv(c + "kernel"), s = f.param_iv(c + "stride"), p = f.param_iv(c + "padding");
    const bool include_pad =
        f.param_s(c + "op") == "avg" ? f.param_b(c + "count_include_pad") : true;
    return pool_params(static_cast<int>(k.at(0)), static_cast<int>(k.at(1)),
                       static_cast<int>(s.at(0)), static_cast<int>(s.at(1)),
                       static_cast<int>(p.at(0)), static_cast<int>(p.at(1)), include_pad);
  };
  Tensor x = f.at("pool.x");
  EXPECT_LT(rel_error(max_pool2d(x, params("maxpool_k3s2p1")), f.at("maxpool_k3s2p1.y")), 1e-5);
  EXPECT_LT(rel_error(max_pool2d(x, params("maxpool_k2s2p0")), f.at("maxpool_k2s2p0.y")), 1e-5);
  EXPECT_LT(rel_error(avg_pool2d(x, params("avgpool_k3s2p1")), f.at("avgpool_k3s2p1.y")), 1e-5);
  EXPECT_LT(
      rel_error(avg_pool2d(x, params("avgpool_k3s2p1_nopad")), f.at("avgpool_k3s2p1_nopad.y")),
      1e-5);
  EXPECT_LT(rel_error(avg_pool2d(x, params("avgpool_k3x2s1p1x0")), f.at("avgpool_k3x2s1p1x0.y")),
            1e-5);
  EXPECT_LT(rel_error(global_avg_pool2d(x), f.at("gap.y")), 1e-5);
}

// ---- bad inputs ----

TEST(OpsConv, Conv2dBadInputs) {
  Tensor x = randn({2, 5, 7, 3}, 1);
  Conv2dParams p = conv_params(1, 1, 1, 1, 1);
  expect_error(
      [&] {
        conv2d(randn({5, 7, 3}, 1), randn({4, 3, 3, 3}, 2), Tensor(), p);
      },
      {"conv2d", "[5, 7, 3]", "rank 4"});
  expect_error(
      [&] {
        conv2d(x, randn({4, 3, 3, 2}, 2), Tensor(), p);
      },
      {"conv2d", "channel mismatch", "[2, 5, 7, 3]", "[4, 3, 3, 2]"});
  expect_error(
      [&] {
        conv2d(randn({2, 5, 7, 4}, 1), randn({5, 3, 3, 2}, 2), Tensor(),
               conv_params(1, 1, 1, 1, 2));
      },
      {"conv2d", "[5, 3, 3, 2]", "not divisible by groups 2"});
  expect_error(
      [&] {
        conv2d(randn({1, 2, 2, 3}, 1), randn({4, 5, 5, 3}, 2), Tensor(), p);
      },
      {"conv2d", "[1, 2, 2, 3]", "[4, 5, 5, 3]", "larger than the padded input"});
  expect_error(
      [&] {
        conv2d(x, randn({4, 3, 3, 3}, 2), randn({5}, 3), p);
      },
      {"conv2d", "bias", "[5]", "[4, 3, 3, 3]"});
  expect_error(
      [&] {
        conv2d(x, Tensor::zeros({4, 3, 3, 3}, DType::BF16), Tensor(), p);
      },
      {"conv2d", "dtype", "bf16[4, 3, 3, 3]", "[2, 5, 7, 3]"});
  expect_error(
      [&] {
        conv2d(x, randn({4, 3, 3, 3}, 2), Tensor(), conv_params(0, 1, 0, 0, 1));
      },
      {"conv2d", "stride"});
  expect_error([&] { conv2d(x, Tensor(), Tensor(), p); }, {"conv2d", "weight", "undefined"});
}

TEST(OpsConv, BatchNormBadInputs) {
  Tensor x = randn({2, 3, 4, 5}, 1);
  Tensor w = Tensor::ones({5}), b = Tensor::zeros({5});
  Tensor rm = Tensor::zeros({5}), rv = Tensor::ones({5});
  expect_error(
      [&] {
        batch_norm2d(randn({3, 4, 5}, 1), w, b, rm, rv, true);
      },
      {"batch_norm2d", "[3, 4, 5]", "rank 4"});
  Tensor w4 = Tensor::ones({4});
  expect_error([&] { batch_norm2d(x, w4, b, rm, rv, true); },
               {"batch_norm2d", "weight", "[4]", "[2, 3, 4, 5]"});
  Tensor rv6 = Tensor::ones({6});
  expect_error([&] { batch_norm2d(x, w, b, rm, rv6, false); },
               {"batch_norm2d", "running_var", "[6]", "[2, 3, 4, 5]"});
  Tensor undefined;
  expect_error([&] { batch_norm2d(x, undefined, b, rm, rv, true); },
               {"batch_norm2d", "weight", "undefined"});
  expect_error(
      [&] {
        batch_norm2d(randn({1, 1, 1, 5}, 1), w, b, rm, rv, true);
      },
      {"batch_norm2d", "more than one value per channel", "[1, 1, 1, 5]"});
  Tensor wbf = Tensor::ones({5}, DType::BF16);
  expect_error([&] { batch_norm2d(x, wbf, b, rm, rv, true); },
               {"batch_norm2d", "dtype", "bf16[5]"});
}

TEST(OpsConv, PoolBadInputs) {
  Tensor x = randn({2, 5, 7, 3}, 1);
  expect_error(
      [&] {
        max_pool2d(randn({5, 7, 3}, 1), pool_params(3, 3, 2, 2, 1, 1));
      },
      {"max_pool2d", "[5, 7, 3]", "rank 4"});
  expect_error([&] { max_pool2d(x, pool_params(3, 3, 2, 2, 2, 2)); },
               {"max_pool2d", "padding 2x2", "half the kernel 3x3", "[2, 5, 7, 3]"});
  expect_error([&] { avg_pool2d(x, pool_params(9, 3, 1, 1, 1, 1)); },
               {"avg_pool2d", "kernel 9x3", "larger than the padded input", "[2, 5, 7, 3]"});
  expect_error([&] { avg_pool2d(x, pool_params(3, 3, 0, 1, 1, 1)); }, {"avg_pool2d", "stride 0x1"});
  expect_error([&] { global_avg_pool2d(randn({2, 3}, 1)); }, {"global_avg_pool2d", "[2, 3]"});
}

}  // namespace
}  // namespace mokd
