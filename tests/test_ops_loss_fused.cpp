// The fused loss kernels on the CPU (engine/cpu/loss.cpp): finite-difference gradient checks at
// odd class counts and B = 1, soft targets that require grad, per-row losses and per-row
// gradients of the backend calls against the composed definition, and bad backend operands.
#include <cmath>

#include "tests/test_util.h"

namespace mokd {
namespace {

using test::expect_close;
using test::expect_error;
using test::gradcheck;
using test::randn;
using test::requires_grad;

// Labels b * 3 mod C, so rows hit the first, the last and middle classes.
Tensor labels_for(int64_t B, int64_t C) {
  std::vector<int64_t> v;
  for (int64_t b = 0; b < B; ++b) v.push_back(b == 1 ? C - 1 : (b * 3) % C);
  return Tensor::from_vector_i64(v, {B});
}

TEST(OpsLossFusedGrad, CrossEntropyLabelsSmoothingOddShapes) {
  for (auto [B, C] : {std::pair<int64_t, int64_t>{1, 7}, {3, 7}, {1, 1000}, {2, 13}}) {
    Tensor x = requires_grad(randn({B, C}, 10 + C, 2.f));
    Tensor labels = labels_for(B, C);
    for (float s : {0.f, 0.1f})
      gradcheck([&](const std::vector<Tensor>& v) { return cross_entropy(v[0], labels, s); }, {x},
                {},
                "cross_entropy B=" + std::to_string(B) + " C=" + std::to_string(C) +
                    " s=" + std::to_string(s));
  }
}

TEST(OpsLossFusedGrad, SoftTargetsWithGrad) {
  for (auto [B, C] : {std::pair<int64_t, int64_t>{1, 7}, {4, 9}, {1, 1001}}) {
    Tensor x = requires_grad(randn({B, C}, 20 + C, 2.f));
    Tensor q = requires_grad(softmax(randn({B, C}, 21 + C)).detach());
    gradcheck([](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], v[1]); }, {x, q},
              {}, "cross_entropy_soft B=" + std::to_string(B) + " C=" + std::to_string(C));
    // Only the targets require grad: they still get theirs, the logits none.
    Tensor xc = x.detach(), qc = requires_grad(q.detach().clone());
    cross_entropy_soft(xc, qc).backward();
    ASSERT_TRUE(qc.grad().defined());
    Tensor expect = scale(log_softmax(xc), -1.f / static_cast<float>(B));
    expect_close(qc.grad(), expect, 1e-5, 1e-6, "soft-target gradient");
  }
  // Targets that do not sum to one (the gradient uses sum(q), not 1).
  Tensor x = requires_grad(randn({3, 7}, 30, 2.f));
  Tensor q = requires_grad(test::uniform({3, 7}, 31, 0.f, 0.5f));
  gradcheck([](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], v[1]); }, {x, q}, {},
            "cross_entropy_soft, unnormalised targets");
}

TEST(OpsLossFusedGrad, KlDivOddShapes) {
  for (auto [B, C] : {std::pair<int64_t, int64_t>{1, 7}, {1, 1000}, {3, 13}}) {
    Tensor s = requires_grad(randn({B, C}, 40 + C, 2.f));
    Tensor t = requires_grad(randn({B, C}, 41 + C, 3.f));
    for (float T : {1.f, 4.f}) {
      gradcheck(
          [&](const std::vector<Tensor>& v) { return kl_div(v[0], t, T); }, {s}, {},
          "kl_div B=" + std::to_string(B) + " C=" + std::to_string(C) + " T=" + std::to_string(T));
      // A teacher that requires grad still gets none.
      Tensor tc = requires_grad(t.detach().clone());
      kl_div(s, tc, T).backward();
      EXPECT_FALSE(tc.grad().defined());
    }
  }
}

// Per-row losses and per-row gradients (gloss [B], not a broadcast scalar) of the backend calls
// against -sum_c q log_softmax(x) and its autograd gradient.
TEST(OpsLossFused, BackendRowsMatchComposedDefinition) {
  const int64_t B = 5, C = 11;
  const float s = 0.1f;
  Tensor x = randn({B, C}, 50, 2.f), labels = labels_for(B, C), gl = randn({B}, 51);
  Backend& be = backend_for(x);
  for (bool soft : {false, true}) {
    Tensor q = soft ? softmax(randn({B, C}, 52)) : Tensor::empty({B, C});
    Tensor t = q;  // the target before smoothing
    if (!soft) be.one_hot(labels, t, 1.f, 0.f);
    Tensor xr = requires_grad(x.clone()), tr = requires_grad(t.clone());
    Tensor ref_rows = neg(sum(mul(add_scalar(scale(tr, 1.f - s), s / C), log_softmax(xr)), {1}));
    sum(mul(ref_rows, gl)).backward();

    Tensor rows = Tensor::empty({B}), lse = Tensor::empty({B});
    be.cross_entropy(x, soft ? nullptr : &labels, soft ? &t : nullptr, s, rows, lse);
    expect_close(rows, ref_rows.detach(), 1e-5, 1e-6, soft ? "soft rows" : "label rows");
    expect_close(lse, logsumexp(x), 1e-6, 1e-6, "lse");
    Tensor gx = Tensor::empty({B, C}), gt = Tensor::empty({B, C});
    be.cross_entropy_backward(x, soft ? nullptr : &labels, soft ? &t : nullptr, s, lse, gl, 1.f,
                              &gx, soft ? &gt : nullptr);
    expect_close(gx, xr.grad(), 1e-5, 1e-6, "per-row logits gradient");
    if (soft) expect_close(gt, tr.grad(), 1e-5, 1e-6, "per-row target gradient");
  }
  // KL rows: sum_c p_t (log p_t - log p_s) at T = 2.
  Tensor st = randn({B, C}, 53, 2.f);
  Tensor ls_ref = log_softmax(scale(x, 0.5f)), lt_ref = log_softmax(scale(st, 0.5f));
  Tensor kl_ref = sum(mul(exp(lt_ref), sub(lt_ref, ls_ref)), {1});
  Tensor rows = Tensor::empty({B}), lss = Tensor::empty({B}), lst = Tensor::empty({B});
  be.kl_div(x, st, 2.f, rows, lss, lst);
  expect_close(rows, kl_ref, 1e-5, 1e-6, "kl rows");
  Tensor gs = Tensor::empty({B, C});
  be.kl_div_backward(x, st, 2.f, lss, lst, gl, 3.f, gs);
  // 3 g_b / T (p_s - p_t)
  Tensor expect = mul(sub(exp(ls_ref), exp(lt_ref)), scale(reshape(gl, {B, 1}), 1.5f));
  expect_close(gs, expect, 1e-5, 1e-6, "kl per-row gradient");
}

TEST(OpsLossFused, BadBackendOperandsNameTheKernel) {
  Tensor x = randn({3, 4}, 60), rows = Tensor::empty({3}), lse = Tensor::empty({3});
  Tensor labels = Tensor::from_vector_i64({0, 1, 4}, {3});
  Backend& be = backend_for(x);
  expect_error([&] { be.cross_entropy(x, nullptr, nullptr, 0.f, rows, lse); },
               {"cross_entropy", "exactly one"});
  expect_error([&] { be.cross_entropy(x, &labels, nullptr, 0.f, rows, lse); },
               {"cross_entropy", "label 4", "index 2", "[0, 4)", "[3, 4]"});
  Tensor short_rows = Tensor::empty({2});
  expect_error([&] { be.kl_div(x, x, 1.f, short_rows, lse, lse); }, {"kl_div", "loss_rows", "[2]"});
  Tensor g = Tensor::empty({2});
  Tensor gx = Tensor::empty({3, 4});
  expect_error([&] { be.kl_div_backward(x, x, 1.f, lse, lse, g, 1.f, gx); },
               {"kl_div_backward", "grad_loss_rows"});
}

}  // namespace
}  // namespace mokd
