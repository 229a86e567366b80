// Softmax family, layer norm, dropout and drop-path: gradient checks, PyTorch fixtures
// (tools/reference/ops_nn.py writes tests/data/ops_nn.safetensors), masks and bad input.
#include <cmath>

#include "engine/cpu/cpu_backend.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::expect_error;
using test::gradcheck;
using test::randn;
using test::rel_error;
using test::requires_grad;

// ---- softmax family ----

TEST(OpsNnSoftmax, GradcheckLastDimAndDim0) {
  Tensor x = requires_grad(randn({3, 5, 7}, 1, 2.f));
  for (int64_t dim : {-1, 0, 1}) {
    std::string d = " dim " + std::to_string(dim);
    gradcheck([dim](const std::vector<Tensor>& v) { return softmax(v[0], dim); }, {x}, {},
              "softmax" + d);
    gradcheck([dim](const std::vector<Tensor>& v) { return log_softmax(v[0], dim); }, {x}, {},
              "log_softmax" + d);
  }
}

TEST(OpsNnSoftmax, NonContiguousInput) {
  Tensor base = randn({7, 5}, 2);
  Tensor xt = base.permute_view({1, 0});  // [5, 7] strided
  Tensor expect = softmax(xt.contiguous(), -1);
  EXPECT_EQ(rel_error(softmax(xt, -1), expect), 0.0);
  EXPECT_EQ(rel_error(logsumexp(xt, 0), logsumexp(xt.contiguous(), 0)), 0.0);
  EXPECT_EQ(rel_error(layer_norm(xt, Tensor(), Tensor()),
                      layer_norm(xt.contiguous(), Tensor(), Tensor())),
            0.0);
}

TEST(OpsNnSoftmax, RowsSumToOneAndLargeValuesStayFinite) {
  Tensor x = Tensor::from_vector({1000.f, 999.f, -1000.f, -3.f, -4.f, -5.f}, {2, 3});
  auto y = softmax(x).to_vector();
  for (int r = 0; r < 2; ++r) {
    double s = 0;
    for (int c = 0; c < 3; ++c) {
      EXPECT_TRUE(std::isfinite(y[r * 3 + c]));
      s += y[r * 3 + c];
    }
    EXPECT_NEAR(s, 1.0, 1e-6);
  }
  auto ly = log_softmax(x).to_vector();
  for (float v : ly) EXPECT_TRUE(std::isfinite(v));
  // log_softmax(x)[0] = -log(1 + e^-1 + e^-2000), computed here in double.
  EXPECT_NEAR(ly[0], -std::log1p(std::exp(-1.0)), 1e-6);
}

TEST(OpsNnSoftmax, MatchesPyTorch) {
  auto f = test::load_fixture("ops_nn.safetensors");
  Tensor x = f.at("softmax_x");
  EXPECT_LT(rel_error(softmax(x, -1), f.at("softmax_last")), 1e-5);
  EXPECT_LT(rel_error(log_softmax(x, -1), f.at("log_softmax_last")), 1e-5);
  EXPECT_LT(rel_error(softmax(x, 0), f.at("softmax_dim0")), 1e-5);
  EXPECT_LT(rel_error(log_softmax(x, 0), f.at("log_softmax_dim0")), 1e-5);
}

TEST(OpsNnLogsumexp, MatchesPyTorch) {
  auto f = test::load_fixture("ops_nn.safetensors");
  Tensor x = f.at("lse_x");
  EXPECT_LT(rel_error(logsumexp(x, -1), f.at("lse_last")), 1e-5);
  EXPECT_LT(rel_error(logsumexp(x, 1, true), f.at("lse_dim1_keep")), 1e-5);
  EXPECT_LT(rel_error(logsumexp(x, 0), f.at("lse_dim0")), 1e-5);
}

TEST(OpsNnLogsumexp, GradcheckKeepdimBothWays) {
  Tensor x = requires_grad(randn({3, 4, 5}, 4, 2.f));
  for (bool keep : {false, true})
    for (int64_t dim : {-1, 1, 0}) {
      std::string what = "logsumexp dim " + std::to_string(dim) + (keep ? " keepdim" : "");
      gradcheck([=](const std::vector<Tensor>& v) { return logsumexp(v[0], dim, keep); }, {x}, {},
                what);
    }
  EXPECT_EQ(logsumexp(x, 1, true).shape(), (Shape{3, 1, 5}));
  EXPECT_EQ(logsumexp(x, 1, false).shape(), (Shape{3, 5}));
  EXPECT_EQ(logsumexp(randn({6}, 5)).shape(), Shape{});
}

TEST(OpsNnLogsumexp, InfiniteRows) {
  float inf = INFINITY;
  Tensor x = Tensor::from_vector({-inf, -inf, 1.f, inf, 0.f, 0.f}, {3, 2});
  auto v = logsumexp(x).to_vector();
  EXPECT_EQ(v[0], -inf);
  EXPECT_EQ(v[1], inf);
  EXPECT_NEAR(v[2], std::log(2.0), 1e-7);
}

// ---- layer norm ----

TEST(OpsNnLayerNorm, GradcheckAffineAndPlain) {
  Tensor x = requires_grad(randn({2, 3, 9}, 6, 2.f));
  Tensor w = requires_grad(randn({9}, 7));
  Tensor b = requires_grad(randn({9}, 8));
  gradcheck([](const std::vector<Tensor>& v) { return layer_norm(v[0], v[1], v[2]); }, {x, w, b},
            {}, "layer_norm affine");
  gradcheck([](const std::vector<Tensor>& v) { return layer_norm(v[0], Tensor(), Tensor()); }, {x},
            {}, "layer_norm plain");
  gradcheck([](const std::vector<Tensor>& v) { return layer_norm(v[0], v[1], Tensor(), 1e-3f); },
            {requires_grad(randn({5, 1, 7}, 9)), requires_grad(randn({7}, 13))}, {},
            "layer_norm weight only, D = 7");
  // Many columns (beyond one 64-wide block of the weight-gradient kernel).
  gradcheck([](const std::vector<Tensor>& v) { return layer_norm(v[0], v[1], v[2]); },
            {requires_grad(randn({3, 67}, 10)), requires_grad(randn({67}, 11)),
             requires_grad(randn({67}, 12))},
            {}, "layer_norm D = 67");
}

TEST(OpsNnLayerNorm, MatchesPyTorch) {
  test::Fixture f("ops_nn.safetensors");
  const float eps = f.param_f("ln.eps");
  Tensor x = requires_grad(f.at("ln_x").clone()), w = requires_grad(f.at("ln_w").clone()),
         b = requires_grad(f.at("ln_b").clone());
  Tensor gy = f.at("ln_gy");
  Tensor y = layer_norm(x, w, b, eps);
  EXPECT_LT(rel_error(y, f.at("ln_y_affine")), 1e-5);
  sum(mul(y, gy)).backward();
  EXPECT_LT(rel_error(x.grad(), f.at("ln_gx_affine")), 1e-5);
  EXPECT_LT(rel_error(w.grad(), f.at("ln_gw")), 1e-5);
  EXPECT_LT(rel_error(b.grad(), f.at("ln_gb")), 1e-5);

  Tensor x2 = requires_grad(f.at("ln_x").clone());
  Tensor y2 = layer_norm(x2, Tensor(), Tensor(), eps);
  EXPECT_LT(rel_error(y2, f.at("ln_y_plain")), 1e-5);
  sum(mul(y2, gy)).backward();
  EXPECT_LT(rel_error(x2.grad(), f.at("ln_gx_plain")), 1e-5);
}

TEST(OpsNnLayerNorm, ConstantRowNormalisesToZero) {
  // var = 0: eps inside the sqrt keeps it finite.
  Tensor x = Tensor::full({2, 5}, 3.0);
  for (float v : layer_norm(x, Tensor(), Tensor()).to_vector()) EXPECT_EQ(v, 0.f);
}

TEST(OpsNnLayerNorm, ParallelPathMatchesRowSlices) {
  // [300, 257] is above the kernels' OpenMP threshold; 100-row slices are below it.
  Tensor x = randn({300, 257}, 40, 2.f);
  Tensor w = requires_grad(randn({257}, 41)), b = requires_grad(randn({257}, 42));
  Tensor gy = randn({300, 257}, 43);
  Tensor xr = requires_grad(x.clone());
  Tensor y = layer_norm(xr, w, b);
  sum(mul(y, gy)).backward();
  Tensor gw_full = w.grad().clone(), gb_full = b.grad().clone();
  w.zero_grad();
  b.zero_grad();
  for (int64_t r0 = 0; r0 < 300; r0 += 100) {
    Tensor xs = requires_grad(x.narrow_view(0, r0, 100).clone());
    Tensor ys = layer_norm(xs, w, b);
    EXPECT_EQ(rel_error(ys, y.narrow_view(0, r0, 100).contiguous()), 0.0);
    sum(mul(ys, gy.narrow_view(0, r0, 100).contiguous())).backward();
    EXPECT_EQ(rel_error(xs.grad(), xr.grad().narrow_view(0, r0, 100).contiguous()), 0.0);
    EXPECT_EQ(rel_error(softmax(xs.detach()), softmax(x).narrow_view(0, r0, 100).contiguous()),
              0.0);
    EXPECT_EQ(
        rel_error(log_softmax(xs.detach()), log_softmax(x).narrow_view(0, r0, 100).contiguous()),
        0.0);
    EXPECT_EQ(rel_error(logsumexp(xs.detach()), logsumexp(x).narrow_view(0, r0, 100).contiguous()),
              0.0);
  }
  // Slice gradients summed in f32 vs one double accumulation: close, not bitwise.
  EXPECT_LT(rel_error(w.grad(), gw_full), 1e-5);
  EXPECT_LT(rel_error(b.grad(), gb_full), 1e-5);
}

// ---- dropout / drop-path ----

TEST(OpsNnDropout, MaskComesFromGeneratorAndIsTheGradient) {
  const float p = 0.3f;
  Tensor x = requires_grad(randn({4, 33}, 20));
  Generator gen(7, Stream::Dropout);
  Tensor y = dropout(x, p, true, gen);
  sum(y).backward();

  Generator fresh(7, Stream::Dropout);
  Tensor mask = Tensor::empty({4, 33});
  backend_for(mask).bernoulli_scaled(mask, 1.f - p, fresh.next(mask.numel()));
  EXPECT_EQ(gen.counter(), fresh.counter());
  EXPECT_EQ(x.grad().to_vector(), mask.to_vector());
  Tensor expect = mul(x.detach(), mask);
  EXPECT_EQ(y.to_vector(), expect.to_vector());

  // The generator advanced: a second call draws a different mask.
  Tensor y2 = dropout(x.detach(), p, true, gen);
  EXPECT_NE(y2.to_vector(), y.to_vector());
}

TEST(OpsNnDropout, KeptFractionAndScale) {
  for (float p : {0.1f, 0.5f}) {
    Generator gen(11, Stream::Dropout);
    const int64_t n = 100000;
    auto v = dropout(Tensor::ones({n}), p, true, gen).to_vector();
    int64_t kept = 0;
    float scale_expected = 1.f / (1.f - p);
    for (float e : v) {
      if (e != 0.f) {
        ++kept;
        EXPECT_FLOAT_EQ(e, scale_expected);
      }
    }
    double frac = static_cast<double>(kept) / n;
    EXPECT_NEAR(frac, 1.0 - p, 0.01) << "p = " << p;
  }
}

TEST(OpsNnDropout, EvalAndZeroPAreTheIdentity) {
  Tensor x = requires_grad(randn({3, 4}, 21));
  Generator gen(1, Stream::Dropout);
  EXPECT_EQ(dropout(x, 0.5f, false, gen).impl(), x.impl());
  EXPECT_EQ(dropout(x, 0.f, true, gen).impl(), x.impl());
  EXPECT_EQ(drop_path(x, 0.5f, false, gen).impl(), x.impl());
  EXPECT_EQ(drop_path(x, 0.f, true, gen).impl(), x.impl());
  EXPECT_EQ(gen.counter(), 0u);  // nothing drawn
}

TEST(OpsNnDropout, MaskDependsOnlyOnSeedAndCounter) {
  // What CUDA parity relies on: element i of a mask is a function of (seed, offset + i) alone,
  // not of the tensor's size or how the work is split.
  Generator g(3, Stream::Dropout);
  RngKey key = g.next(1000);
  Tensor small = Tensor::empty({10}), big = Tensor::empty({1000});
  backend_for(small).bernoulli_scaled(small, 0.6f, key);
  backend_for(big).bernoulli_scaled(big, 0.6f, key);
  auto s = small.to_vector(), bv = big.to_vector();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(s[i], bv[i]);
  for (int i = 0; i < 1000; ++i)
    EXPECT_EQ(bv[i], philox_uniform(key, i) < 0.6f ? 1.f / 0.6f : 0.f) << i;
  // A shifted counter is the same stream read further along.
  RngKey shifted{key.seed, key.offset + 4};
  Tensor tail = Tensor::empty({8});
  backend_for(tail).bernoulli_scaled(tail, 0.6f, shifted);
  auto tv = tail.to_vector();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(tv[i], bv[i + 4]);
}

TEST(OpsNnDropout, CudaMaskMatchesCpu) {
  if (!device_available(Device::cuda())) GTEST_SKIP() << "no CUDA backend in this build/machine";
  Tensor x = randn({8, 129}, 22);
  Generator gc(5, Stream::Dropout), gg(5, Stream::Dropout);
  Tensor yc = dropout(x, 0.25f, true, gc);
  Tensor yg = dropout(x.to(Device::cuda()), 0.25f, true, gg);
  EXPECT_EQ(yg.to(Device::cpu()).to_vector(), yc.to_vector());
}

TEST(OpsNnDropPath, WholeSamplesDroppedAndGradientIsTheMask) {
  const float p = 0.5f;
  Tensor x = requires_grad(randn({16, 3, 5}, 23));
  Generator gen(9, Stream::Dropout);
  Tensor y = drop_path(x, p, true, gen);
  sum(y).backward();

  Generator fresh(9, Stream::Dropout);
  Tensor mask = Tensor::empty({16, 1, 1});
  backend_for(mask).bernoulli_scaled(mask, 1.f - p, fresh.next(16));
  EXPECT_EQ(gen.counter(), fresh.counter());  // one draw per sample, not per element
  auto m = mask.to_vector(), g = x.grad().to_vector(), yv = y.to_vector(),
       xv = x.detach().to_vector();
  int dropped = 0;
  for (int b = 0; b < 16; ++b) {
    dropped += m[b] == 0.f;
    for (int i = 0; i < 15; ++i) {
      EXPECT_EQ(g[b * 15 + i], m[b]);
      EXPECT_EQ(yv[b * 15 + i], xv[b * 15 + i] * m[b]);
    }
  }
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, 16);
}

TEST(OpsNnDropPath, KeptFraction) {
  Generator gen(12, Stream::Dropout);
  const int64_t n = 100000;
  auto v = drop_path(Tensor::ones({n, 2}), 0.2f, true, gen).to_vector();
  int64_t kept = 0;
  for (int64_t b = 0; b < n; ++b) {
    EXPECT_EQ(v[2 * b], v[2 * b + 1]);
    kept += v[2 * b] != 0.f;
  }
  EXPECT_NEAR(static_cast<double>(kept) / n, 0.8, 0.01);
}

// ---- bad input ----

TEST(OpsNnBadInput, MessagesNameOpAndShapes) {
  Generator gen(1, Stream::Dropout);
  Tensor x = randn({2, 3}, 30);
  expect_error([&] { dropout(x, 1.f, true, gen); }, {"dropout", "[0, 1)", "1"});
  expect_error([&] { dropout(x, -0.1f, false, gen); }, {"dropout", "-0.1"});
  expect_error([&] { drop_path(x, 1.5f, true, gen); }, {"drop_path", "1.5"});
  expect_error([&] { softmax(x, 2); }, {"softmax", "dim 2", "rank 2"});
  expect_error([&] { log_softmax(x, -3); }, {"log_softmax", "dim -3"});
  expect_error([&] { logsumexp(x, 5); }, {"logsumexp", "dim 5"});
  expect_error([&] { softmax(Tensor::from_vector_i64({1, 2}, {2})); }, {"softmax", "i64"});
  expect_error([&] { layer_norm(x, Tensor::ones({4}), Tensor()); },
               {"layer_norm", "weight", "[4]", "[3]", "[2, 3]"});
  expect_error(
      [&] {
        layer_norm(x, Tensor(), Tensor::ones({2, 3}));
      },
      {"layer_norm", "bias", "[2, 3]"});
  expect_error([&] { layer_norm(Tensor::scalar(1.f), Tensor(), Tensor()); },
               {"layer_norm", "rank"});
}

}  // namespace
}  // namespace mokd
