// matmul, linear and the CPU gemm kernel: gradient checks, PyTorch fixtures
// (tools/reference/ops_matmul.py), a naive-loop check of every gemm flag, and bad input.
#include <cmath>
#include <string>

#include "tests/test_util.h"

namespace mokd {
namespace {

using test::error_of;
using test::gradcheck;
using test::randn;
using test::rel_error;
using test::requires_grad;

// ---- gemm kernel against a naive triple loop (double accumulation) ----

// c[i] = alpha op(a[i]) op(b[i]) + beta c0[i], with size-1 batches broadcast.
std::vector<float> naive_gemm(const Tensor& a, const Tensor& b, const Tensor& c0, bool ta, bool tb,
                              float alpha, float beta) {
  auto A = a.to_vector(), B = b.to_vector(), C = c0.to_vector();
  int64_t ba = a.dim() == 3 ? a.size(0) : 1, bb = b.dim() == 3 ? b.size(0) : 1;
  int64_t ar = a.size(-2), ac = a.size(-1), br = b.size(-2), bc = b.size(-1);
  int64_t M = ta ? ac : ar, K = ta ? ar : ac, N = tb ? br : bc;
  int64_t batch = std::max(ba, bb);
  std::vector<float> out(batch * M * N);
  for (int64_t n = 0; n < batch; ++n) {
    const float* pa = A.data() + (ba == 1 ? 0 : n * ar * ac);
    const float* pb = B.data() + (bb == 1 ? 0 : n * br * bc);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        double s = 0;
        for (int64_t k = 0; k < K; ++k) {
          float x = ta ? pa[k * ac + i] : pa[i * ac + k];
          float y = tb ? pb[j * bc + k] : pb[k * bc + j];
          s += static_cast<double>(x) * y;
        }
        size_t o = n * M * N + i * N + j;
        out[o] = static_cast<float>(alpha * s + beta * C[o]);
      }
  }
  return out;
}

void check_gemm(const Shape& as, const Shape& bs, const Shape& cs, bool ta, bool tb, float alpha,
                float beta) {
  Tensor a = randn(as, 1), b = randn(bs, 2), c0 = randn(cs, 3);
  Tensor c = c0.clone();
  backend_for(a).gemm(a, b, c, ta, tb, alpha, beta);
  Tensor expected = Tensor::from_vector(naive_gemm(a, b, c0, ta, tb, alpha, beta), cs);
  std::string what = "gemm a" + shape_str(as) + (ta ? "^T" : "") + " b" + shape_str(bs) +
                     (tb ? "^T" : "") + " alpha " + std::to_string(alpha) + " beta " +
                     std::to_string(beta);
  EXPECT_LT(rel_error(c, expected), 1e-5) << what;
}

TEST(CpuGemm, AllTransposeFlagsMatchANaiveLoop) {
  check_gemm({3, 5}, {5, 7}, {3, 7}, false, false, 1.f, 0.f);
  check_gemm({5, 3}, {5, 7}, {3, 7}, true, false, 1.f, 0.f);
  check_gemm({3, 5}, {7, 5}, {3, 7}, false, true, 1.f, 0.f);
  check_gemm({5, 3}, {7, 5}, {3, 7}, true, true, 1.f, 0.f);
}

TEST(CpuGemm, AlphaAndBetaScaleAndAccumulate) {
  check_gemm({4, 6}, {6, 5}, {4, 5}, false, false, 0.5f, 1.f);
  check_gemm({6, 4}, {5, 6}, {4, 5}, true, true, -2.f, 0.25f);
}

TEST(CpuGemm, BatchedAndBroadcastBatch) {
  check_gemm({4, 3, 5}, {4, 5, 2}, {4, 3, 2}, false, false, 1.f, 0.f);
  check_gemm({4, 3, 5}, {5, 2}, {4, 3, 2}, false, false, 1.f, 0.f);    // b rank 2
  check_gemm({1, 5, 3}, {6, 2, 5}, {6, 3, 2}, true, true, 1.f, 0.5f);  // a batch 1
  check_gemm({9, 7, 5}, {9, 7, 6}, {9, 5, 6}, true, false, 1.f, 0.f);  // more batches than threads
}

TEST(CpuGemm, LargeSingleProductUsesEigenThreads) {
  check_gemm({67, 130}, {130, 45}, {67, 45}, false, false, 1.f, 0.f);
  check_gemm({2, 300, 70}, {2, 90, 70}, {2, 300, 90}, false, true, 1.f, 0.f);  // batch < threads
}

TEST(CpuGemm, BetaZeroIgnoresGarbageInC) {
  Tensor a = randn({3, 4}, 1), b = randn({4, 2}, 2);
  Tensor c = Tensor::full({3, 2}, NAN);
  backend_for(a).gemm(a, b, c, false, false, 1.f, 0.f);
  Tensor expected =
      Tensor::from_vector(naive_gemm(a, b, Tensor::zeros({3, 2}), false, false, 1.f, 0.f), {3, 2});
  EXPECT_LT(rel_error(c, expected), 1e-5);
}

TEST(CpuGemm, BadShapesNameTheKernelAndShapes) {
  Tensor a = randn({3, 5}, 1), b = randn({4, 7}, 2), c = Tensor::empty({3, 7});
  std::string msg = error_of([&] { backend_for(a).gemm(a, b, c, false, false, 1.f, 0.f); });
  EXPECT_NE(msg.find("gemm"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4, 7]"), std::string::npos) << msg;
  Tensor b3 = randn({2, 5, 7}, 2), a3 = randn({3, 3, 5}, 1), c3 = Tensor::empty({3, 3, 7});
  msg = error_of([&] { backend_for(a).gemm(a3, b3, c3, false, false, 1.f, 0.f); });
  EXPECT_NE(msg.find("batch"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 5, 7]"), std::string::npos) << msg;
}

// ---- matmul ----

TEST(OpsMatmul, GradcheckRank2OddSizes) {
  gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
            {requires_grad(randn({3, 5}, 1)), requires_grad(randn({5, 7}, 2))}, {},
            "matmul 3x5 @ 5x7");
}

TEST(OpsMatmul, GradcheckRank3Batched) {
  gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
            {requires_grad(randn({2, 3, 4}, 1)), requires_grad(randn({2, 4, 5}, 2))}, {},
            "matmul batched");
}

TEST(OpsMatmul, GradcheckRank4Batched) {
  gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
            {requires_grad(randn({2, 3, 2, 3}, 1)), requires_grad(randn({2, 3, 3, 4}, 2))}, {},
            "matmul rank 4");
}

TEST(OpsMatmul, GradcheckSharedRank2B) {
  gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
            {requires_grad(randn({3, 4, 5}, 1)), requires_grad(randn({5, 3}, 2))}, {},
            "matmul shared b");
}

TEST(OpsMatmul, GradcheckOnlyOneSideRequiresGrad) {
  gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
            {randn({3, 5}, 1), requires_grad(randn({5, 7}, 2))}, {}, "matmul grad b only");
  gradcheck([](const std::vector<Tensor>& x) { return matmul(x[0], x[1]); },
            {requires_grad(randn({2, 3, 5}, 1)), randn({5, 2}, 2)}, {}, "matmul grad a only");
}

TEST(OpsMatmul, NonContiguousInputs) {
  Tensor a = randn({5, 3}, 1), b = randn({5, 7}, 2);
  Tensor at = a.permute_view({1, 0});  // [3, 5], strided
  Tensor expected = matmul(at.contiguous(), b);
  EXPECT_LT(rel_error(matmul(at, b), expected), 1e-6);
}

TEST(OpsMatmul, RecordsOneNode) {
  Tensor a = requires_grad(randn({2, 3}, 1)), b = requires_grad(randn({3, 4}, 2));
  Tensor y = matmul(a, b);
  ASSERT_FALSE(y.is_leaf());
  EXPECT_EQ(std::string(y.impl()->grad_fn->name), "matmul");
  for (const Edge& e : y.impl()->grad_fn->inputs) EXPECT_TRUE(e.leaf != nullptr);
}

TEST(OpsMatmul, MatchesTorchMatmul) {
  auto f = test::load_fixture("ops_matmul.safetensors");
  EXPECT_LT(rel_error(matmul(f.at("mm2_a"), f.at("mm2_b")), f.at("mm2_out")), 1e-5);
  EXPECT_LT(rel_error(matmul(f.at("mm4_a"), f.at("mm4_b")), f.at("mm4_out")), 1e-5);
  EXPECT_LT(rel_error(matmul(f.at("mmshared_a"), f.at("mmshared_b")), f.at("mmshared_out")), 1e-5);
}

TEST(OpsMatmul, InnerDimensionMismatchNamesShapes) {
  Tensor a = randn({3, 5}, 1), b = randn({4, 7}, 2);
  std::string msg = error_of([&] { matmul(a, b); });
  EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4, 7]"), std::string::npos) << msg;
}

TEST(OpsMatmul, RankAndBatchMismatchNamesShapes) {
  Tensor a = randn({3, 5}, 1), b = randn({2, 5, 7}, 2);  // rank-3 b needs a rank-3 a
  std::string msg = error_of([&] { matmul(a, b); });
  EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 5, 7]"), std::string::npos) << msg;

  Tensor a3 = randn({3, 4, 5}, 1);  // batch 3 vs 2
  msg = error_of([&] { matmul(a3, b); });
  EXPECT_NE(msg.find("[3, 4, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 5, 7]"), std::string::npos) << msg;

  Tensor v = randn({5}, 3);
  msg = error_of([&] { matmul(a, v); });
  EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[5]"), std::string::npos) << msg;
}

TEST(OpsMatmul, DtypeMismatchNamesBothTensors) {
  Tensor a = randn({3, 5}, 1);
  Tensor i = Tensor::from_vector_i64(std::vector<int64_t>(35, 1), {5, 7});
  std::string msg = error_of([&] { matmul(a, i); });
  EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("i64[5, 7]"), std::string::npos) << msg;
}

TEST(OpsMatmul, DifferentDevicesNameBothTensors) {
  if (!device_available(Device::cuda(0)))
    GTEST_SKIP() << "no CUDA device: cross-device check needs one";
  Tensor a = randn({3, 5}, 1), b = randn({5, 7}, 2).to(Device::cuda(0));
  std::string msg = error_of([&] { matmul(a, b); });
  EXPECT_NE(msg.find("matmul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("devices"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[5, 7]"), std::string::npos) << msg;
}

// ---- linear ----

TEST(OpsLinear, GradcheckWithBias) {
  gradcheck([](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); },
            {requires_grad(randn({3, 5}, 1)), requires_grad(randn({4, 5}, 2)),
             requires_grad(randn({4}, 3))},
            {}, "linear with bias");
}

TEST(OpsLinear, GradcheckWithoutBias) {
  gradcheck([](const std::vector<Tensor>& x) { return linear(x[0], x[1], Tensor()); },
            {requires_grad(randn({3, 5}, 1)), requires_grad(randn({4, 5}, 2))}, {},
            "linear no bias");
}

TEST(OpsLinear, Gradcheck3DInput) {
  gradcheck([](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); },
            {requires_grad(randn({2, 3, 5}, 1)), requires_grad(randn({7, 5}, 2)),
             requires_grad(randn({7}, 3))},
            {}, "linear 3-D input");
}

TEST(OpsLinear, GradcheckFrozenWeight) {
  gradcheck([](const std::vector<Tensor>& x) { return linear(x[0], x[1], x[2]); },
            {requires_grad(randn({2, 3, 5}, 1)), randn({4, 5}, 2), randn({4}, 3)}, {},
            "linear input grad only");
}

TEST(OpsLinear, RecordsOneNode) {
  Tensor x = requires_grad(randn({2, 3, 5}, 1)), w = requires_grad(randn({4, 5}, 2));
  Tensor b = requires_grad(randn({4}, 3));
  Tensor y = linear(x, w, b);
  EXPECT_EQ(shape_str(y.shape()), "[2, 3, 4]");
  ASSERT_FALSE(y.is_leaf());
  EXPECT_EQ(std::string(y.impl()->grad_fn->name), "linear");
  for (const Edge& e : y.impl()->grad_fn->inputs) EXPECT_TRUE(e.leaf != nullptr);
}

TEST(OpsLinear, MatchesTorchLinear) {
  auto f = test::load_fixture("ops_matmul.safetensors");
  EXPECT_LT(rel_error(linear(f.at("lin_x"), f.at("lin_w"), f.at("lin_b")), f.at("lin_out")), 1e-5);
  EXPECT_LT(rel_error(linear(f.at("lin_x"), f.at("lin_w"), Tensor()), f.at("lin_nobias_out")),
            1e-5);
}

TEST(OpsLinear, BadShapesNameOpAndShapes) {
  Tensor x = randn({3, 5}, 1), w = randn({4, 6}, 2), b = randn({4}, 3);
  std::string msg = error_of([&] { linear(x, w, b); });
  EXPECT_NE(msg.find("linear"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4, 6]"), std::string::npos) << msg;

  Tensor w2 = randn({4, 5}, 2), b2 = randn({3}, 3);
  msg = error_of([&] { linear(x, w2, b2); });
  EXPECT_NE(msg.find("linear"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4, 5]"), std::string::npos) << msg;

  Tensor w3 = randn({2, 4, 5}, 2);
  msg = error_of([&] { linear(x, w3, Tensor()); });
  EXPECT_NE(msg.find("linear"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[2, 4, 5]"), std::string::npos) << msg;

  Tensor xi = Tensor::from_vector_i64(std::vector<int64_t>(15, 0), {3, 5});
  msg = error_of([&] { linear(xi, w2, Tensor()); });
  EXPECT_NE(msg.find("linear"), std::string::npos) << msg;
  EXPECT_NE(msg.find("i64[3, 5]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[4, 5]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace mokd
