// CUDA parity of the fused losses (kernels/loss.cu): cross-entropy with hard labels (smoothing 0
// and 0.1) and soft targets, and the distillation KL at T = 1 and 4, on the CPU and the GPU with
// the same inputs: the scalar loss, the per-row losses and log-sum-exps of the backend calls, and
// every gradient (f32 relative error < 1e-5, never NaN), over B in {1, 7, 256} and C in
// {10, 1000, 1001} (one warp per row and one block per row). Also: a label outside [0, C) throws
// a mokd::Error naming the op. Each test skips when no CUDA device is available.
// MOKD_CUDA_POISON=1 is set before the first CUDA allocation: fresh device memory is NaN, so an
// element a kernel forgets to write fails the comparison.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/host_sync.h"
#include "engine/ops.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::randn;
using test::rel_error;

constexpr double kTol = 1e-5;

const std::vector<std::pair<int64_t, int64_t>>& shapes() {
  static const std::vector<std::pair<int64_t, int64_t>> s = [] {
    std::vector<std::pair<int64_t, int64_t>> v;
    for (int64_t B : {1, 7, 256})
      for (int64_t C : {10, 1000, 1001}) v.push_back({B, C});
    return v;
  }();
  return s;
}

std::string shape_name(int64_t B, int64_t C) {
  return "B=" + std::to_string(B) + " C=" + std::to_string(C);
}

bool has_nan(const Tensor& t) {
  for (float v : t.to_vector())
    if (std::isnan(v)) return true;
  return false;
}

// gpu (on the GPU) matches cpu: same shape, no NaN in either, relative error < kTol.
void expect_match(const Tensor& gpu, const Tensor& cpu, const std::string& what) {
  ASSERT_TRUE(gpu.defined() && cpu.defined()) << what << ": missing tensor";
  ASSERT_TRUE(gpu.device().is_cuda()) << what;
  ASSERT_EQ(gpu.shape(), cpu.shape()) << what;
  Tensor g = gpu.to(Device::cpu());
  EXPECT_FALSE(has_nan(g)) << what << ": NaN on the GPU";
  EXPECT_FALSE(has_nan(cpu)) << what << ": NaN on the CPU";
  double e = rel_error(g, cpu);
  EXPECT_LT(e, kTol) << what << ": relative error " << e;
}

Tensor labels_for(int64_t B, int64_t C) {
  std::vector<int64_t> v;
  for (int64_t b = 0; b < B; ++b) v.push_back(b == 1 ? C - 1 : (b * 7 + 3) % C);
  return Tensor::from_vector_i64(v, {B});
}

// Runs loss(inputs) on both devices; inputs flagged in `grad` get gradients of the scalar loss.
template <class F>
void loss_parity(const std::string& what, F loss, const std::vector<Tensor>& inputs,
                 const std::vector<bool>& grad) {
  try {
    std::vector<Tensor> ci, gi;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Tensor c = inputs[i].clone(), d = inputs[i].to(Device::cuda());
      if (grad[i]) {
        c.set_requires_grad(true);
        d.set_requires_grad(true);
      }
      ci.push_back(c);
      gi.push_back(d);
    }
    Tensor cl = loss(ci), gl = loss(gi);
    expect_match(gl, cl, what + " loss");
    cl.backward();
    gl.backward();
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (grad[i])
        expect_match(gi[i].grad(), ci[i].grad(), what + " grad of input " + std::to_string(i));
      else
        EXPECT_FALSE(gi[i].grad().defined()) << what << ": input " << i << " got a gradient";
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << " threw: " << e.what();
  }
}

// Fresh device memory must be NaN while poisoning is on (the premise of the checks above).
TEST(CudaLosses, PoisonIsOn) {
  SKIP_WITHOUT_CUDA();
  const char* p = std::getenv("MOKD_CUDA_POISON");
  if (p && std::string(p) == "0")
    GTEST_SKIP() << "MOKD_CUDA_POISON=0 (e.g. under compute-sanitizer)";
  for (float v : Tensor::empty({37}, DType::F32, Device::cuda()).to_vector())
    ASSERT_TRUE(std::isnan(v)) << "a fresh CUDA allocation is not poisoned: " << v;
}

TEST(CudaLosses, CrossEntropyHardLabels) {
  SKIP_WITHOUT_CUDA();
  for (auto [B, C] : shapes()) {
    Tensor x = randn({B, C}, 100 + C + B, 3.f), labels = labels_for(B, C);
    for (float s : {0.f, 0.1f})
      loss_parity("cross_entropy s=" + std::to_string(s) + " " + shape_name(B, C),
                  [&](const std::vector<Tensor>& v) {
                    return cross_entropy(v[0], labels.to(v[0].device()), s);
                  },
                  {x}, {true});
  }
}

TEST(CudaLosses, CrossEntropySoftTargets) {
  SKIP_WITHOUT_CUDA();
  for (auto [B, C] : shapes()) {
    Tensor x = randn({B, C}, 200 + C + B, 3.f), q = softmax(randn({B, C}, 201 + C + B, 2.f));
    std::string n = shape_name(B, C);
    loss_parity("cross_entropy_soft " + n,
                [](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], v[1]); }, {x, q},
                {true, true});
    loss_parity("cross_entropy_soft, targets only " + n,
                [](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], v[1]); }, {x, q},
                {false, true});
    loss_parity("cross_entropy_soft, logits only " + n,
                [](const std::vector<Tensor>& v) { return cross_entropy_soft(v[0], v[1]); }, {x, q},
                {true, false});
  }
}

TEST(CudaLosses, KlDivTemperatures) {
  SKIP_WITHOUT_CUDA();
  for (auto [B, C] : shapes()) {
    Tensor s = randn({B, C}, 300 + C + B, 3.f), t = randn({B, C}, 301 + C + B, 3.f);
    for (float T : {1.f, 4.f})
      loss_parity("kl_div T=" + std::to_string(T) + " " + shape_name(B, C),
                  [T](const std::vector<Tensor>& v) { return kl_div(v[0], v[1], T); }, {s, t},
                  {true, false});
  }
}

// Identical student and teacher: zero loss and zero gradient on the GPU too.
TEST(CudaLosses, KlDivIdenticalLogitsIsZero) {
  SKIP_WITHOUT_CUDA();
  for (int64_t C : {10, 1001}) {
    Tensor t = randn({7, C}, 400 + C, 3.f).to(Device::cuda());
    Tensor s = t.clone().set_requires_grad(true);
    Tensor loss = kl_div(s, t, 2.f);
    EXPECT_NEAR(loss.item(), 0.f, 1e-6) << "C=" << C;
    loss.backward();
    for (float g : s.grad().to_vector()) ASSERT_NEAR(g, 0.f, 1e-6) << "C=" << C;
  }
}

// The backend calls themselves: per-row losses and log-sum-exps, and gradients for a per-row
// gloss [B] (the ops only pass a broadcast scalar).
TEST(CudaLosses, BackendRowsAndPerRowGradients) {
  SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda();
  for (auto [B, C] : shapes()) {
    std::string n = shape_name(B, C);
    try {
      Tensor x = randn({B, C}, 500 + C + B, 3.f), t = randn({B, C}, 501 + C + B, 3.f);
      Tensor q = softmax(t), labels = labels_for(B, C), gl = randn({B}, 502 + B);
      Tensor xd = x.to(gpu), td = t.to(gpu), qd = q.to(gpu), ld = labels.to(gpu), gld = gl.to(gpu);
      Backend& cb = backend_for(x);
      Backend& gb = backend_for(xd);
      for (int mode = 0; mode < 2; ++mode) {  // 0: labels, smoothing 0.1; 1: soft targets
        const float s = mode == 0 ? 0.1f : 0.f;
        const Tensor* lc = mode == 0 ? &labels : nullptr;
        const Tensor* lg = mode == 0 ? &ld : nullptr;
        const Tensor* sc = mode == 1 ? &q : nullptr;
        const Tensor* sg = mode == 1 ? &qd : nullptr;
        std::string w = (mode == 0 ? "ce labels " : "ce soft ") + n;
        Tensor rc = Tensor::empty({B}), ec = Tensor::empty({B});
        Tensor rg = Tensor::empty({B}, DType::F32, gpu), eg = Tensor::empty({B}, DType::F32, gpu);
        cb.cross_entropy(x, lc, sc, s, rc, ec);
        gb.cross_entropy(xd, lg, sg, s, rg, eg);
        expect_match(rg, rc, w + " rows");
        expect_match(eg, ec, w + " lse");
        Tensor gxc = Tensor::empty({B, C}), gtc = Tensor::empty({B, C});
        Tensor gxg = Tensor::empty({B, C}, DType::F32, gpu),
               gtg = Tensor::empty({B, C}, DType::F32, gpu);
        cb.cross_entropy_backward(x, lc, sc, s, ec, gl, 0.5f, &gxc, mode == 1 ? &gtc : nullptr);
        gb.cross_entropy_backward(xd, lg, sg, s, eg, gld, 0.5f, &gxg, mode == 1 ? &gtg : nullptr);
        expect_match(gxg, gxc, w + " per-row logits gradient");
        if (mode == 1) expect_match(gtg, gtc, w + " per-row target gradient");
      }
      for (float T : {1.f, 4.f}) {
        std::string w = "kl T=" + std::to_string(T) + " " + n;
        Tensor rc = Tensor::empty({B}), sc = Tensor::empty({B}), tc = Tensor::empty({B});
        Tensor rg = Tensor::empty({B}, DType::F32, gpu), sg = Tensor::empty({B}, DType::F32, gpu),
               tg = Tensor::empty({B}, DType::F32, gpu);
        cb.kl_div(x, t, T, rc, sc, tc);
        gb.kl_div(xd, td, T, rg, sg, tg);
        expect_match(rg, rc, w + " rows");
        expect_match(sg, sc, w + " student lse");
        expect_match(tg, tc, w + " teacher lse");
        Tensor gc = Tensor::empty({B, C}), gg = Tensor::empty({B, C}, DType::F32, gpu);
        cb.kl_div_backward(x, t, T, sc, tc, gl, 2.f, gc);
        gb.kl_div_backward(xd, td, T, sg, tg, gld, 2.f, gg);
        expect_match(gg, gc, w + " per-row gradient");
      }
    } catch (const std::exception& e) {
      ADD_FAILURE() << n << " threw: " << e.what();
    }
  }
}

TEST(CudaLosses, LabelOutOfRangeThrowsNamingTheOp) {
  SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda();
  for (int64_t C : {11, 1001}) {
    Tensor x = randn({6, C}, 600 + C, 2.f).to(gpu);
    for (int64_t badv : {C, int64_t{-1}}) {
      Tensor bad = Tensor::from_vector_i64({0, badv, 1, 2, badv, 4}, {6}, gpu);
      std::string msg = test::error_of([&] { cross_entropy(x, bad, 0.1f); });
      ASSERT_FALSE(msg.empty()) << "a label " << badv << " outside [0, " << C << ") must throw";
      for (std::string part : {std::string("cross_entropy"), "label " + std::to_string(badv),
                               std::string("index 1"), "[0, " + std::to_string(C) + ")"})
        EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
    }
    // The backend is still usable after the error.
    Tensor ok = Tensor::from_vector_i64({0, 1, 2, 3, 4, 5}, {6}, gpu);
    EXPECT_TRUE(std::isfinite(cross_entropy(x, ok).item()));
  }
}

// Deferred (as the trainer runs): no host read per call; check_deferred() names the first bad
// label of the calls since the last check, and the good calls before it cost no host read.
TEST(CudaLosses, DeferredLabelChecksReadOnceAndNameTheBadLabel) {
  SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda();
  Backend& be = backend_for(gpu);
  const int64_t C = 11;
  Tensor x = randn({6, C}, 611, 2.f).to(gpu);
  Tensor ok = Tensor::from_vector_i64({0, 1, 2, 3, 4, 5}, {6}, gpu);
  Tensor bad = Tensor::from_vector_i64({0, 1, 2, 3, 12, 5}, {6}, gpu);
  be.set_deferred_checks(true);
  const uint64_t before = host_syncs();
  for (int i = 0; i < 3; ++i) (void)cross_entropy(x, ok, 0.1f);
  Tensor oh = Tensor::empty({6, C}, DType::F32, gpu);
  be.one_hot(ok, oh, 1.f, 0.f);
  EXPECT_EQ(host_syncs() - before, 0u) << "last: " << last_host_sync();
  EXPECT_NO_THROW(be.check_deferred());
  EXPECT_EQ(host_syncs() - before, 1u) << "one read for the four checks";
  (void)cross_entropy(x, bad, 0.f);  // recorded, not thrown
  const std::string msg = test::error_of([&] { be.check_deferred(); });
  be.set_deferred_checks(false);
  for (const char* part : {"cross_entropy", "label 12", "index 4", "[0, 11)"})
    EXPECT_NE(msg.find(part), std::string::npos) << "missing '" << part << "' in: " << msg;
  EXPECT_NO_THROW(be.check_deferred()) << "a failed check is reported once";
  EXPECT_FALSE(test::error_of([&] { cross_entropy(x, bad, 0.f); }).empty())
      << "immediate checks again once deferral is off";
}

}  // namespace
}  // namespace mokd
