// Model FLOPs (engine/model_flops.h) against hand counts: a linear layer, a grouped strided
// convolution and attention, forward and backward, in f32 and bf16 (attention's bf16 path runs
// as batched GEMMs, its f32 path as one kernel: both count the same products), and elementwise
// work counts nothing.
#include <gtest/gtest.h>

#include "engine/model_flops.h"
#include "engine/ops.h"
#include "engine/precision.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

// FLOPs counted while f runs.
template <class F>
double flops_of(F&& f) {
  const double before = model_flops();
  f();
  return model_flops() - before;
}

struct PrecisionGuard {
  MatmulPrecision saved = matmul_precision();
  ~PrecisionGuard() { set_matmul_precision(saved); }
};

TEST(ModelFlops, LinearForwardAndBackwardAreThreeProducts) {
  PrecisionGuard guard;
  const int64_t M = 6, K = 5, N = 7;
  for (MatmulPrecision prec : {MatmulPrecision::F32, MatmulPrecision::BF16}) {
    set_matmul_precision(prec);  // bf16 operands are widened inside the CPU gemm: counted once
    Tensor x = test::requires_grad(test::randn({M, K}, 1));
    Tensor w = test::requires_grad(test::randn({N, K}, 2));
    Tensor b = test::requires_grad(test::randn({N}, 3));
    Tensor y;
    EXPECT_EQ(flops_of([&] { y = linear(x, w, b); }), 2.0 * M * N * K) << precision_name(prec);
    // x's gradient (gy w) and w's (gy^T x): the bias gradient is a reduction, not a product.
    EXPECT_EQ(flops_of([&] { sum(y).backward(); }), 2 * 2.0 * M * N * K) << precision_name(prec);
  }
}

TEST(ModelFlops, ConvolutionCountsEveryOutputsTerms) {
  // x [2, 9, 8, 6], w [8, 3, 3, 6 / 2]: groups 2, stride 2, padding 1.
  const int64_t N = 2, H = 9, W = 8, C = 6, O = 8, G = 2, kh = 3, kw = 3;
  Conv2dParams p;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = 1;
  p.groups = G;
  const int64_t Ho = (H + 2 - kh) / 2 + 1, Wo = (W + 2 - kw) / 2 + 1;  // 5, 4
  const double per_pass = 2.0 * N * Ho * Wo * O * (kh * kw * (C / G));
  Tensor x = test::requires_grad(test::randn({N, H, W, C}, 4));
  Tensor w = test::requires_grad(test::randn({O, kh, kw, C / G}, 5));
  Tensor y;
  EXPECT_EQ(flops_of([&] { y = conv2d(x, w, Tensor(), p); }), per_pass);
  ASSERT_EQ(y.shape(), (Shape{N, Ho, Wo, O}));
  EXPECT_EQ(flops_of([&] { sum(y).backward(); }), 2 * per_pass) << "data and weight gradients";
}

TEST(ModelFlops, AttentionCountsTheSameProductsInF32AndBf16) {
  PrecisionGuard guard;
  const int64_t B = 2, H = 3, Nq = 5, D = 4;
  const double forward = 2.0 * B * H * Nq * Nq * (D + D);  // q k^T and p v
  for (MatmulPrecision prec : {MatmulPrecision::F32, MatmulPrecision::BF16}) {
    set_matmul_precision(prec);
    Tensor q = test::requires_grad(test::randn({B, H, Nq, D}, 6));
    Tensor k = test::requires_grad(test::randn({B, H, Nq, D}, 7));
    Tensor v = test::requires_grad(test::randn({B, H, Nq, D}, 8));
    Tensor o;
    EXPECT_EQ(flops_of([&] { o = scaled_dot_product_attention(q, k, v, 0.5f); }), forward)
        << precision_name(prec);
    EXPECT_EQ(flops_of([&] { sum(o).backward(); }), 2 * forward) << precision_name(prec);
  }
}

TEST(ModelFlops, ElementwiseWorkIsNotModelFlops) {
  Tensor x = test::requires_grad(test::randn({4, 8}, 9));
  EXPECT_EQ(flops_of([&] { sum(gelu(layer_norm(x, Tensor(), Tensor()))).backward(); }), 0.0);
}

}  // namespace
}  // namespace mokd
