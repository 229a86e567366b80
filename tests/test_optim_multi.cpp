// Multi-tensor optimizer kernels on the CPU backend: adam_update_multi / sgd_update_multi must
// give exactly (bit for bit) what the per-tensor adam_update / sgd_update give, over several steps,
// for tensors of odd sizes in two parameter groups; sum_squares_multi must equal a loop of
// sum_squares_accumulate and scale_multi a broadcast multiply; a bad entry is named and leaves the
// whole list unchanged.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/backend.h"
#include "mokd/optim.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::expect_error;
using test::randn;

const std::vector<int64_t> kSizes = {1, 7, 1000, 4099, 0, 33};
constexpr int kSteps = 4;

// Two copies of the same parameters and states: one per path.
struct Copies {
  std::vector<Tensor> p, m, v;
};

Copies make_copies(uint64_t seed, int slots) {
  Copies c;
  for (size_t i = 0; i < kSizes.size(); ++i) {
    c.p.push_back(randn({kSizes[i]}, seed + i));
    if (slots >= 1) c.m.push_back(Tensor::zeros({kSizes[i]}));
    if (slots >= 2) c.v.push_back(Tensor::zeros({kSizes[i]}));
  }
  return c;
}

Copies clone(const Copies& a) {
  Copies c;
  for (const Tensor& t : a.p) c.p.push_back(t.clone());
  for (const Tensor& t : a.m) c.m.push_back(t.clone());
  for (const Tensor& t : a.v) c.v.push_back(t.clone());
  return c;
}

void expect_identical(const Copies& a, const Copies& b, const std::string& what) {
  for (size_t i = 0; i < a.p.size(); ++i) {
    EXPECT_EQ(a.p[i].to_vector(), b.p[i].to_vector()) << what << ": param " << i;
    if (!a.m.empty())
      EXPECT_EQ(a.m[i].to_vector(), b.m[i].to_vector()) << what << ": slot 0 of " << i;
    if (!a.v.empty())
      EXPECT_EQ(a.v[i].to_vector(), b.v[i].to_vector()) << what << ": slot 1 of " << i;
  }
}

// Group 0: even entries (no decay, lr 1e-2); group 1: odd entries (decay 0.05, lr 3e-2). The last
// entry lags one step behind (as a parameter that once had no gradient): its own bias correction.
AdamHyper adam_hyper(size_t i, int step, bool decoupled) {
  AdamHyper h;
  h.lr = i % 2 ? 3e-2f : 1e-2f;
  h.weight_decay = i % 2 ? 0.05f : 0.f;
  h.beta1 = 0.8f;
  h.step = i + 1 == kSizes.size() ? (step > 1 ? step - 1 : 1) : step;
  h.decoupled = decoupled;
  return h;
}

void check_adam(bool decoupled) {
  Copies single = make_copies(10, 2), multi = clone(single);
  Backend& be = backend_for(Device::cpu());
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<AdamTensorRef> list;
    for (size_t i = 0; i < kSizes.size(); ++i) {
      Tensor g = randn({kSizes[i]}, 100 * step + i);
      AdamHyper h = adam_hyper(i, step, decoupled);
      be.adam_update(single.p[i], g, single.m[i], single.v[i], h);
      list.push_back({multi.p[i], g, multi.m[i], multi.v[i], h});
    }
    be.adam_update_multi(list);
    expect_identical(
        multi, single,
        std::string(decoupled ? "adamw" : "adam-l2") + " step " + std::to_string(step));
  }
}

TEST(OptimMulti, AdamWMultiEqualsPerTensorBitForBit) { check_adam(true); }
TEST(OptimMulti, AdamL2MultiEqualsPerTensorBitForBit) { check_adam(false); }

void check_sgd(float momentum, float dampening, bool nesterov) {
  const int slots = momentum != 0.f ? 1 : 0;
  Copies single = make_copies(20, slots), multi = clone(single);
  Backend& be = backend_for(Device::cpu());
  for (int step = 1; step <= kSteps; ++step) {
    std::vector<SgdTensorRef> list;
    for (size_t i = 0; i < kSizes.size(); ++i) {
      Tensor g = randn({kSizes[i]}, 200 * step + i);
      SgdHyper h;
      h.lr = i % 2 ? 0.05f : 0.1f;
      h.weight_decay = i % 2 ? 0.01f : 0.f;
      h.momentum = momentum;
      h.dampening = dampening;
      h.nesterov = nesterov;
      h.first_step = step == 1;
      Tensor sb = slots ? single.m[i] : Tensor(), mb = slots ? multi.m[i] : Tensor();
      be.sgd_update(single.p[i], g, sb, h);
      list.push_back({multi.p[i], g, mb, h});
    }
    be.sgd_update_multi(list);
    expect_identical(multi, single, "sgd step " + std::to_string(step));
  }
}

TEST(OptimMulti, SgdMomentumDampeningMultiEqualsPerTensor) { check_sgd(0.9f, 0.1f, false); }
TEST(OptimMulti, SgdNesterovMultiEqualsPerTensor) { check_sgd(0.9f, 0.f, true); }
TEST(OptimMulti, SgdPlainMultiEqualsPerTensor) { check_sgd(0.f, 0.f, false); }

TEST(OptimMulti, SumSquaresMultiEqualsLoopOfAccumulate) {
  std::vector<Tensor> xs;
  for (size_t i = 0; i < kSizes.size(); ++i) xs.push_back(randn({kSizes[i]}, 30 + i, 3.f));
  Backend& be = backend_for(Device::cpu());
  Tensor want = Tensor::scalar(0.5f), got = Tensor::scalar(0.5f);  // both accumulate
  std::vector<const Tensor*> ptrs;
  for (const Tensor& x : xs) {
    be.sum_squares_accumulate(x, want);
    ptrs.push_back(&x);
  }
  be.sum_squares_multi(ptrs, got);
  EXPECT_EQ(got.item(), want.item());
  Tensor none = Tensor::scalar(2.f);
  be.sum_squares_multi({}, none);
  EXPECT_EQ(none.item(), 2.f);
}

TEST(OptimMulti, ScaleMultiEqualsBroadcastMultiply) {
  Backend& be = backend_for(Device::cpu());
  Tensor s = Tensor::scalar(0.37f);
  std::vector<Tensor> xs, want;
  std::vector<Tensor*> ptrs;
  for (size_t i = 0; i < kSizes.size(); ++i) xs.push_back(randn({kSizes[i]}, 40 + i));
  for (Tensor& x : xs) {
    Tensor w = x.clone();
    be.binary(BinaryOp::Mul, w, s.expand_view(w.shape()), w);
    want.push_back(w);
    ptrs.push_back(&x);
  }
  be.scale_multi(ptrs, s);
  for (size_t i = 0; i < xs.size(); ++i) EXPECT_EQ(xs[i].to_vector(), want[i].to_vector()) << i;
}

TEST(OptimMulti, BadEntryIsNamedAndNothingChanges) {
  Backend& be = backend_for(Device::cpu());
  Tensor p0 = randn({5}, 1), p1 = randn({4}, 2);
  const std::vector<float> before = p0.to_vector();
  std::vector<AdamTensorRef> list = {
      {p0, randn({5}, 3), Tensor::zeros({5}), Tensor::zeros({5}), AdamHyper{}},
      {p1, randn({6}, 4), Tensor::zeros({4}), Tensor::zeros({4}), AdamHyper{}}};
  expect_error([&] { be.adam_update_multi(list); },
               {"adam_update_multi entry 1", "grad", "[6]", "[4]"});
  EXPECT_EQ(p0.to_vector(), before);  // entry 0 was not updated either
  list[1].g = randn({4}, 4);
  list[1].h.step = 0;
  expect_error([&] { be.adam_update_multi(list); }, {"adam_update_multi entry 1", "step"});

  SgdHyper sh;
  sh.momentum = 0.9f;
  std::vector<SgdTensorRef> sl = {{p0, randn({5}, 5), Tensor::zeros({3}), sh}};
  expect_error([&] { be.sgd_update_multi(sl); },
               {"sgd_update_multi entry 0", "momentum_buffer", "[3]"});
  Tensor out = Tensor::scalar(0.f);
  expect_error(
      [&] {
        be.sum_squares_multi({&p0, nullptr}, out);
      },
      {"sum_squares_multi", "entry 1"});
  Tensor f64 = Tensor::zeros({2}, DType::F64);
  expect_error(
      [&] {
        be.scale_multi({&p0, &f64}, Tensor::scalar(1.f));
      },
      {"scale_multi entry 1", "f32"});
  EXPECT_EQ(p0.to_vector(), before);
}

// The optimizer checks every gradient before it moves any parameter.
TEST(OptimMulti, OptimizerStepChecksAllGradientsFirst) {
  Tensor a = randn({3}, 1), b = randn({2}, 2);
  a.set_requires_grad(true);
  b.set_requires_grad(true);
  const std::vector<float> a0 = a.to_vector();
  AdamW opt({{{a}, 0.1f, 0.f}, {{b}, 0.1f, 0.1f}});
  a.set_grad(randn({3}, 3));
  b.set_grad(Tensor::zeros({5}));
  expect_error([&] { opt.step(); }, {"adamw.step", "param 1.0", "[5]", "[2]"});
  EXPECT_EQ(a.to_vector(), a0);
  EXPECT_EQ(opt.state().size(), 1u);  // no parameter state was created
}

}  // namespace
}  // namespace mokd
