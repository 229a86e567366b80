// scaled_dot_product_attention: gradient checks, the saved log-sum-exp, PyTorch fixtures
// (tools/reference/ops_attention.py writes ops_attention.safetensors; the scales come from its
// params), a composed-ops cross-check, and bad input.
#include <cmath>
#include <string>

#include "engine/precision.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::error_of;
using test::gradcheck;
using test::randn;
using test::rel_error;
using test::requires_grad;

// softmax(scale q k^T) v and the row log-sum-exp, by plain loops in double.
void naive_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                     std::vector<double>& out, std::vector<double>& lse) {
  auto Q = q.to_vector(), K = k.to_vector(), V = v.to_vector();
  int64_t BH = q.size(0) * q.size(1), N = q.size(2), NK = k.size(2), D = q.size(3);
  out.assign(BH * N * D, 0.0);
  lse.assign(BH * N, 0.0);
  std::vector<double> s(NK);
  for (int64_t h = 0; h < BH; ++h)
    for (int64_t i = 0; i < N; ++i) {
      double m = -INFINITY;
      for (int64_t j = 0; j < NK; ++j) {
        double d = 0;
        for (int64_t c = 0; c < D; ++c)
          d += double(Q[(h * N + i) * D + c]) * K[(h * NK + j) * D + c];
        s[j] = d * scale;
        m = std::max(m, s[j]);
      }
      double l = 0;
      for (int64_t j = 0; j < NK; ++j) l += std::exp(s[j] - m);
      lse[h * N + i] = m + std::log(l);
      for (int64_t j = 0; j < NK; ++j) {
        double p = std::exp(s[j] - m) / l;
        for (int64_t c = 0; c < D; ++c) out[(h * N + i) * D + c] += p * V[(h * NK + j) * D + c];
      }
    }
}

std::vector<float> to_float(const std::vector<double>& v) { return {v.begin(), v.end()}; }

TEST(OpsAttention, GradcheckB2H3N5D4) {
  float scale = 1.f / std::sqrt(4.f);
  gradcheck(
      [scale](const std::vector<Tensor>& x) {
        return scaled_dot_product_attention(x[0], x[1], x[2], scale);
      },
      {requires_grad(randn({2, 3, 5, 4}, 1)), requires_grad(randn({2, 3, 5, 4}, 2)),
       requires_grad(randn({2, 3, 5, 4}, 3))},
      {}, "attention N=5");
}

TEST(OpsAttention, GradcheckOddN7) {
  float scale = 1.f / std::sqrt(4.f);
  gradcheck(
      [scale](const std::vector<Tensor>& x) {
        return scaled_dot_product_attention(x[0], x[1], x[2], scale);
      },
      {requires_grad(randn({1, 2, 7, 4}, 4)), requires_grad(randn({1, 2, 7, 4}, 5)),
       requires_grad(randn({1, 2, 7, 4}, 6))},
      {}, "attention N=7");
}

TEST(OpsAttention, GradcheckFewerKeysThanQueries) {
  gradcheck(
      [](const std::vector<Tensor>& x) {
        return scaled_dot_product_attention(x[0], x[1], x[2], 0.4f);
      },
      {requires_grad(randn({1, 2, 5, 3}, 7)), requires_grad(randn({1, 2, 3, 3}, 8)),
       requires_grad(randn({1, 2, 3, 3}, 9))},
      {}, "attention Nq=5 Nk=3");
}

TEST(OpsAttention, GradcheckOnlyQueryRequiresGrad) {
  gradcheck(
      [](const std::vector<Tensor>& x) {
        return scaled_dot_product_attention(x[0], x[1], x[2], 0.5f);
      },
      {requires_grad(randn({2, 1, 5, 4}, 10)), randn({2, 1, 5, 4}, 11), randn({2, 1, 5, 4}, 12)},
      {}, "attention grad q only");
}

TEST(OpsAttention, KernelLseAndOutputMatchNaiveLoops) {
  Tensor q = randn({2, 3, 11, 6}, 1, 2.f), k = randn({2, 3, 11, 6}, 2, 2.f),
         v = randn({2, 3, 11, 6}, 3);
  float scale = 1.f / std::sqrt(6.f);
  Tensor out = Tensor::empty(q.shape()), lse = Tensor::empty({2, 3, 11});
  backend_for(q).attention(q, k, v, scale, out, lse);
  std::vector<double> eo, el;
  naive_attention(q, k, v, scale, eo, el);
  EXPECT_LT(rel_error(out, Tensor::from_vector(to_float(eo), q.shape())), 1e-5);
  EXPECT_LT(rel_error(lse, Tensor::from_vector(to_float(el), {2, 3, 11})), 1e-5);
}

TEST(OpsAttention, LargeScoresDoNotOverflow) {
  // Scores of several hundred: exp would overflow without the max subtraction.
  Tensor q = randn({1, 1, 6, 8}, 1, 10.f), k = randn({1, 1, 6, 8}, 2, 10.f),
         v = randn({1, 1, 6, 8}, 3);
  Tensor out = scaled_dot_product_attention(q, k, v, 1.f);
  std::vector<double> eo, el;
  naive_attention(q, k, v, 1.f, eo, el);
  EXPECT_LT(rel_error(out, Tensor::from_vector(to_float(eo), q.shape())), 1e-5);
}

TEST(OpsAttention, BackwardMatchesComposedOps) {
  // The fused backward against autograd through matmul/softmax composed by hand (N=198, D=5).
  Tensor q0 = randn({1, 2, 198, 5}, 1), k0 = randn({1, 2, 198, 5}, 2),
         v0 = randn({1, 2, 198, 5}, 3);
  float scale = 1.f / std::sqrt(5.f);
  Tensor gout = randn({1, 2, 198, 5}, 4);
  Tensor q = requires_grad(q0.clone()), k = requires_grad(k0.clone()),
         v = requires_grad(v0.clone());
  sum(mul(scaled_dot_product_attention(q, k, v, scale), gout)).backward();
  Tensor q2 = requires_grad(q0.clone()), k2 = requires_grad(k0.clone()),
         v2 = requires_grad(v0.clone());
  Tensor kt = transpose(k2, 2, 3);
  Tensor p = softmax(scale * matmul(q2, kt), -1);
  sum(mul(matmul(p, v2), gout)).backward();
  EXPECT_LT(rel_error(q.grad(), q2.grad()), 1e-4);
  EXPECT_LT(rel_error(k.grad(), k2.grad()), 1e-4);
  EXPECT_LT(rel_error(v.grad(), v2.grad()), 1e-4);
}

TEST(OpsAttention, MatchesTorchSdpa) {
  test::Fixture f("ops_attention.safetensors");
  Tensor out = scaled_dot_product_attention(f.at("small_q"), f.at("small_k"), f.at("small_v"),
                                            f.param_f("small.scale"));
  EXPECT_LT(rel_error(out, f.at("small_out")), 1e-5);
  out = scaled_dot_product_attention(f.at("vit_q"), f.at("vit_k"), f.at("vit_v"),
                                     f.param_f("vit.scale"));
  EXPECT_EQ(shape_str(out.shape()), "[1, 1, 197, 64]");
  EXPECT_LT(rel_error(out, f.at("vit_out")), 1e-5);
}

TEST(OpsAttention, RecordsOneNode) {
  Tensor q = requires_grad(randn({1, 1, 3, 2}, 1)), k = requires_grad(randn({1, 1, 3, 2}, 2));
  Tensor v = requires_grad(randn({1, 1, 3, 2}, 3));
  Tensor y = scaled_dot_product_attention(q, k, v, 1.f);
  ASSERT_FALSE(y.is_leaf());
  EXPECT_EQ(std::string(y.impl()->grad_fn->name), "scaled_dot_product_attention");
  EXPECT_EQ(y.impl()->grad_fn->inputs.size(), 3u);
}

// The packed form against the split / attend / merge composition it replaces (timm's layout).
Tensor composed_packed(const Tensor& qkv, int64_t H, float sc) {
  const int64_t B = qkv.size(0), N = qkv.size(1), Dh = qkv.size(2) / (3 * H);
  Tensor p5 = permute(reshape(qkv, {B, N, 3, H, Dh}), {2, 0, 3, 1, 4});
  auto part = [&](int64_t i) { return reshape(narrow(p5, 0, i, 1), {B, H, N, Dh}); };
  Tensor o = scaled_dot_product_attention(part(0), part(1), part(2), sc);
  return reshape(permute(o, {0, 2, 1, 3}), {B, N, H * Dh});
}

TEST(OpsAttention, PackedEqualsSplitAttendMerge) {
  for (bool bf16 : {false, true}) {
    set_matmul_precision(bf16 ? MatmulPrecision::BF16 : MatmulPrecision::F32);
    Tensor a = requires_grad(randn({2, 7, 3 * 3 * 4}, 11)), b = requires_grad(a.detach().clone());
    Tensor ya = self_attention_packed(a, 3, 0.5f), yb = composed_packed(b, 3, 0.5f);
    Tensor r = randn(ya.shape(), 12);
    sum(mul(ya, r)).backward();
    sum(mul(yb, r)).backward();
    set_matmul_precision(MatmulPrecision::F32);
    EXPECT_EQ(ya.shape(), (Shape{2, 7, 12}));
    EXPECT_LT(rel_error(ya, yb), 1e-6) << (bf16 ? "bf16" : "f32") << " forward";
    EXPECT_LT(rel_error(a.grad(), b.grad()), 1e-6) << (bf16 ? "bf16" : "f32") << " gradient";
  }
}

TEST(OpsAttention, GradcheckPacked) {
  gradcheck([](const std::vector<Tensor>& x) { return self_attention_packed(x[0], 2, 0.7f); },
            {requires_grad(randn({2, 5, 3 * 2 * 3}, 13))}, {}, "self_attention_packed");
}

TEST(OpsAttention, PackedBadShapeNamesOpAndShape) {
  std::string msg = error_of([] { self_attention_packed(randn({2, 5, 20}, 1), 3, 1.f); });
  EXPECT_NE(msg.find("self_attention_packed"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 5, 20]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("heads 3"), std::string::npos) << msg;
}

TEST(OpsAttention, BadShapesNameOpAndShapes) {
  Tensor q = randn({2, 3, 5, 4}, 1);
  auto expect_names = [](const std::string& msg, const std::vector<std::string>& parts) {
    EXPECT_NE(msg.find("scaled_dot_product_attention"), std::string::npos) << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << p << " in " << msg;
  };
  Tensor k3 = randn({2, 5, 4}, 2);  // rank 3
  expect_names(error_of([&] { scaled_dot_product_attention(q, k3, k3, 1.f); }),
               {"[2, 3, 5, 4]", "[2, 5, 4]"});
  Tensor kd = randn({2, 3, 5, 6}, 2);  // head dim differs
  expect_names(error_of([&] { scaled_dot_product_attention(q, kd, kd, 1.f); }),
               {"[2, 3, 5, 4]", "[2, 3, 5, 6]"});
  Tensor kh = randn({2, 2, 5, 4}, 2);  // heads differ
  expect_names(error_of([&] { scaled_dot_product_attention(q, kh, kh, 1.f); }),
               {"[2, 3, 5, 4]", "[2, 2, 5, 4]"});
  Tensor k = randn({2, 3, 6, 4}, 2), v = randn({2, 3, 5, 4}, 3);  // k and v token counts differ
  expect_names(error_of([&] { scaled_dot_product_attention(q, k, v, 1.f); }),
               {"[2, 3, 6, 4]", "[2, 3, 5, 4]"});
  Tensor ki = Tensor::from_vector_i64(std::vector<int64_t>(120, 0), {2, 3, 5, 4});
  expect_names(error_of([&] { scaled_dot_product_attention(q, ki, ki, 1.f); }),
               {"f32[2, 3, 5, 4]", "i64[2, 3, 5, 4]"});
}

}  // namespace
}  // namespace mokd
