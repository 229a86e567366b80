// Model FLOPs (engine/kernel_costs.h) against hand counts: a linear layer, a grouped strided
// convolution and attention, forward and backward, in f32 and bf16 (attention's bf16 path runs
// as batched GEMMs, its f32 path as one kernel: both count the same products), and elementwise
// work counts nothing.
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "engine/kernel_costs.h"
#include "engine/ops.h"
#include "engine/precision.h"
#include "mokd/cost_report.h"
#include "tests/cuda_test_util.h"
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
  PrecisionGuard guard;
  // x [2, 9, 8, 6], w [8, 3, 3, 6 / 2]: groups 2, stride 2, padding 1.
  const int64_t N = 2, H = 9, W = 8, C = 6, O = 8, G = 2, kh = 3, kw = 3;
  Conv2dParams p;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = 1;
  p.groups = G;
  const int64_t Ho = (H + 2 - kh) / 2 + 1, Wo = (W + 2 - kw) / 2 + 1;  // 5, 4
  const double per_pass = 2.0 * N * Ho * Wo * O * (kh * kw * (C / G));
  for (MatmulPrecision prec : {MatmulPrecision::F32, MatmulPrecision::BF16}) {
    set_matmul_precision(prec);  // bf16: the CPU widens and calls itself in f32, counted once
    Tensor x = test::requires_grad(test::randn({N, H, W, C}, 4));
    Tensor w = test::requires_grad(test::randn({O, kh, kw, C / G}, 5));
    Tensor y;
    EXPECT_EQ(flops_of([&] { y = conv2d(x, w, Tensor(), p); }), per_pass) << precision_name(prec);
    ASSERT_EQ(y.shape(), (Shape{N, Ho, Wo, O}));
    EXPECT_EQ(flops_of([&] { sum(y).backward(); }), 2 * per_pass)
        << precision_name(prec) << ": data and weight gradients";
  }
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

// Linear -> ReLU -> cross-entropy on x [M, K] (no gradient), w [N, K] and b [N] (gradients), f32:
// every kernel call with the bytes it moves, counted by hand (4-byte floats, 8-byte labels).
struct Expected {
  int64_t calls;
  double read, written, flops;
};

std::map<std::string, KernelCost> ledger_of_small_model(Device dev, bool backward) {
  const int64_t M = 6, K = 5, N = 7;
  Tensor x = test::randn({M, K}, 11).to(dev);
  Tensor w = test::randn({N, K}, 12).to(dev);
  Tensor b = test::randn({N}, 13).to(dev);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor y = Tensor::from_vector_i64({0, 1, 2, 3, 4, 5}, {M}).to(dev);
  KernelLedger ledger;
  Tensor loss = cross_entropy(relu(linear(x, w, b)), y, 0.f);
  if (backward) loss.backward();
  return ledger.by_kernel();
}

void expect_ledger(const std::map<std::string, KernelCost>& got,
                   const std::map<std::string, Expected>& want, const char* what) {
  for (const auto& [k, e] : want) {
    auto it = got.find(k);
    ASSERT_NE(it, got.end()) << what << ": no " << k;
    EXPECT_EQ(it->second.calls, e.calls) << what << ": " << k;
    EXPECT_EQ(it->second.bytes_read, e.read) << what << ": " << k;
    EXPECT_EQ(it->second.bytes_written, e.written) << what << ": " << k;
    EXPECT_EQ(it->second.flops, e.flops) << what << ": " << k;
  }
  for (const auto& [k, c] : got) EXPECT_TRUE(want.count(k)) << what << ": unexpected " << k;
}

TEST(KernelLedger, SmallModelMatchesAHandCount) {
  const double M = 6, K = 5, N = 7, f = 4, i64 = 8;
  const double x = M * K * f, w = N * K * f, b = N * f, act = M * N * f, labels = M * i64;
  const double rows = M * f;
  const double gemm = 2 * M * N * K;
  // Forward: y = x w^T + b (one fused call), relu, the fused cross-entropy (per-row losses and
  // log-sum-exps), their mean.
  std::map<std::string, Expected> forward = {
      {"gemm_bias", {1, x + w + b, act, gemm}},
      {"relu", {1, act, act, 0}},
      {"cross_entropy", {1, act + labels, rows + rows, 0}},
      {"reduce_sum", {1, rows, f, 0}},
  };
  expect_ledger(ledger_of_small_model(Device::cpu(), false), forward, "forward");
  // Backward adds: the seed gradient (one float); the fused cross-entropy backward (logits,
  // labels, log-sum-exps and the one incoming gradient, read for every row); relu's backward
  // (input and incoming gradient); w's gradient gy^T x (x needs none); b's, a column sum of gy.
  // No copies: each gradient is a fresh buffer, which the tape takes over as it arrives
  // (engine/autograd.cpp, accumulate).
  std::map<std::string, Expected> both = forward;
  both["fill"] = {1, 0, f, 0};
  both["cross_entropy_backward"] = {1, act + labels + rows + f, act, 0};
  both["relu"] = {2, act + 2 * act, act + act, 0};
  both["gemm"] = {1, act + x, w, gemm};
  both["reduce_sum"] = {2, rows + act, f + b, 0};
  expect_ledger(ledger_of_small_model(Device::cpu(), true), both, "forward and backward");
}

// A broadcast operand counts its distinct elements once: x [4, 3] + b [3] reads 12 + 3 floats.
TEST(KernelLedger, BroadcastOperandsCountTheirDistinctElements) {
  Tensor x = test::randn({4, 3}, 21), b = test::randn({3}, 22);
  KernelLedger ledger;
  (void)add(x, b);
  const auto got = ledger.by_kernel();
  ASSERT_TRUE(got.count("binary"));
  EXPECT_EQ(got.at("binary").calls, 1);
  EXPECT_EQ(got.at("binary").bytes_read, (12 + 3) * 4.0);
  EXPECT_EQ(got.at("binary").bytes_written, 12 * 4.0);
}

// The floor is the bytes at copy bandwidth plus the FLOPs at the GEMM rate, and the table shows
// per-step values, largest floor first, then the total.
TEST(KernelLedger, FloorAndTable) {
  KernelCost gemm{20, 4e9, 2e9, 2e12}, copy{40, 2e9, 2e9, 0};
  const CardRates card{1000, 100};  // 1000 GB/s, 100 TFLOP/s
  EXPECT_DOUBLE_EQ(floor_ms(gemm, card), 1000 * (6e9 / 1e12 + 2e12 / 1e14));  // 6 + 20 ms
  EXPECT_DOUBLE_EQ(floor_ms(copy, card), 4.0);
  const std::string t = format_ledger({{"copy", copy}, {"gemm", gemm}}, 2, card, nullptr);
  const size_t g = t.find("  gemm"), c = t.find("  copy"), total = t.find("  total");
  ASSERT_NE(g, std::string::npos) << t;
  ASSERT_NE(c, std::string::npos) << t;
  ASSERT_NE(total, std::string::npos) << t;
  EXPECT_LT(g, c) << "the larger floor first: " << t;
  EXPECT_LT(c, total) << t;
  // Per step (2 steps): gemm 10 calls, 2000 MB read, 1000 GFLOP, floor 13 ms; total 30 calls.
  EXPECT_NE(
      t.find("gemm                              10     2000.00     1000.00   1000.000    13.000"),
      std::string::npos)
      << t;
  EXPECT_NE(t.find("total                             30"), std::string::npos) << t;
}

TEST(KernelLedger, OneLedgerAtATime) {
  KernelLedger a;
  EXPECT_FALSE(test::error_of([] { KernelLedger b; }).empty());
}

TEST(CudaKernelLedger, SameLedgerAsTheCpu) {
  SKIP_WITHOUT_CUDA();
  const auto cpu = ledger_of_small_model(Device::cpu(), true);
  const auto gpu = ledger_of_small_model(Device::cuda(), true);
  ASSERT_EQ(cpu.size(), gpu.size());
  for (const auto& [k, c] : cpu) {
    auto it = gpu.find(k);
    ASSERT_NE(it, gpu.end()) << k;
    EXPECT_EQ(it->second.calls, c.calls) << k;
    EXPECT_EQ(it->second.bytes_read, c.bytes_read) << k;
    EXPECT_EQ(it->second.bytes_written, c.bytes_written) << k;
    EXPECT_EQ(it->second.flops, c.flops) << k;
  }
}

}  // namespace
}  // namespace mokd
