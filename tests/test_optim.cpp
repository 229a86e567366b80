// Optimizers (AdamW, Adam with L2, SGD), gradient clipping, lr schedules and weight-decay groups
// against PyTorch/timm. Fixture: tests/data/optim.safetensors from tools/reference/optim.py
// (`python3 tools/make_reference.py optim`); the hyper-parameters come from the fixture's params.
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "mokd/optim.h"
#include "mokd/schedule.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::expect_error;

const test::Fixture& fixture() {
  static const test::Fixture fx("optim.safetensors");
  return fx;
}

const int kSteps = static_cast<int>(fixture().param_i("steps"));
const int kParams = static_cast<int>(fixture().param("shapes").size());

AdamOptions adam_options(const std::string& c) {
  const std::vector<float> b = fixture().param_fv(c + ".betas");
  return {b.at(0), b.at(1), fixture().param_f(c + ".eps")};
}

SgdOptions sgd_options(const std::string& c) {
  return {fixture().param_f(c + ".momentum"), fixture().param_f(c + ".dampening"),
          fixture().param_b(c + ".nesterov")};
}

float lr(const std::string& c) { return fixture().param_f(c + ".lr"); }
float wd(const std::string& c) { return fixture().param_f(c + ".weight_decay"); }

std::string key(const std::string& a, int t, int i) {
  return a + "." + std::to_string(t) + "." + std::to_string(i);
}

std::vector<Tensor> initial_params() {
  std::vector<Tensor> ps;
  for (int i = 0; i < kParams; ++i) {
    Tensor p = fixture().at("p0." + std::to_string(i)).clone();
    p.set_requires_grad(true);
    ps.push_back(p);
  }
  return ps;
}

// Gives each parameter the fixture's gradient of step t (none where the fixture has none).
void set_grads(std::vector<Tensor>& ps, int t) {
  for (int i = 0; i < kParams; ++i) {
    auto it = fixture().tensors().find(key("g", t, i));
    if (it == fixture().tensors().end())
      ps[i].zero_grad();
    else
      ps[i].set_grad(it->second.clone());
  }
}

void expect_matches_torch(const std::string& name, const std::vector<Tensor>& ps, int t) {
  for (int i = 0; i < kParams; ++i) {
    const Tensor& want = fixture().at(key(name + ".p", t, i));
    double err = test::rel_error(ps[i], want);
    EXPECT_LE(err, 1e-6) << name << ": param " << i << " after step " << t + 1;
  }
}

// Runs the fixture's 10 steps (with the lr scale of `scale_key` when given), checking every step.
void run_case(const std::string& name, Optimizer& opt, std::vector<Tensor>& ps,
              const std::string& scale_key = "") {
  std::vector<float> scale;
  if (!scale_key.empty()) scale = fixture().at(scale_key).to_vector();
  for (int t = 0; t < kSteps; ++t) {
    if (!scale.empty()) opt.set_lr_scale(scale[t]);
    set_grads(ps, t);
    opt.step();
    expect_matches_torch(name, ps, t);
  }
  EXPECT_EQ(opt.step_count(), kSteps);
}

std::map<std::string, Tensor> state_map(const Optimizer& opt) {
  std::map<std::string, Tensor> m;
  for (const auto& [k, t] : opt.state()) m[k] = t.clone();
  return m;
}

// ---------------------------------------------------------------------------------------------
// Trajectories against torch.optim

TEST(OptimTrajectory, AdamWTwoGroupsWithLrScaleMatchesTorch) {
  auto ps = initial_params();
  // The fixture's two groups: params 0 and 2 with decay, param 1 without.
  std::vector<ParamGroup> groups;
  for (const auto& g : fixture().param("adamw.groups")) {
    std::vector<Tensor> members;
    for (const auto& i : g.at("params")) members.push_back(ps.at(i.get<size_t>()));
    groups.push_back({members, lr("adamw"), g.at("weight_decay").get<float>()});
  }
  AdamW opt(groups, adam_options("adamw"));
  run_case("adamw", opt, ps, "adamw.lr_scale");
  // Per-parameter step counts: the fixture has no gradient for (step 6, param 0) and
  // (step 3, param 2), so those skipped one update (bias correction follows their own count).
  std::map<std::string, int64_t> steps;
  for (const auto& [k, t] : opt.state())
    if (t.dtype() == DType::I64) steps[k] = t.to_vector_i64()[0];
  EXPECT_EQ(steps.at("adamw.steps"), 10);
  EXPECT_EQ(steps.at("adamw.step.0.0"), 9);
  EXPECT_EQ(steps.at("adamw.step.0.1"), 9);
  EXPECT_EQ(steps.at("adamw.step.1.0"), 10);
}

TEST(OptimTrajectory, AdamWSmallBeta1MatchesTorch) {
  auto ps = initial_params();
  AdamW opt({{ps, lr("adamw_b"), wd("adamw_b")}}, adam_options("adamw_b"));
  run_case("adamw_b", opt, ps);
}

TEST(OptimTrajectory, AdamCoupledL2MatchesTorch) {
  auto ps = initial_params();
  Adam opt({{ps, lr("adam_l2"), wd("adam_l2")}}, adam_options("adam_l2"));
  EXPECT_STREQ(opt.name(), "adam");
  run_case("adam_l2", opt, ps);
}

TEST(OptimTrajectory, SgdMomentumDampeningMatchesTorch) {
  auto ps = initial_params();
  SGD opt({{ps, lr("sgd_momentum"), wd("sgd_momentum")}}, sgd_options("sgd_momentum"));
  run_case("sgd_momentum", opt, ps);
}

TEST(OptimTrajectory, SgdNesterovMatchesTorch) {
  auto ps = initial_params();
  SGD opt({{ps, lr("sgd_nesterov"), wd("sgd_nesterov")}}, sgd_options("sgd_nesterov"));
  run_case("sgd_nesterov", opt, ps);
}

TEST(OptimTrajectory, SgdWithoutMomentumMatchesTorch) {
  auto ps = initial_params();
  SGD opt({{ps, lr("sgd_plain"), wd("sgd_plain")}}, sgd_options("sgd_plain"));
  run_case("sgd_plain", opt, ps);
  for (const auto& [k, t] : opt.state()) EXPECT_EQ(t.dtype(), DType::I64) << k;  // no buffers
}

// Gradients from autograd: AdamW on a quadratic drives the parameters to the target, and
// set_group_lr(0) freezes a group.
TEST(Optim, AdamWOnAutogradQuadraticConverges) {
  Tensor w = test::randn({4, 3}, 7);
  Tensor b = test::randn({5}, 8);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor target = test::randn({4, 3}, 9);
  Tensor b0 = b.clone();
  AdamW opt({{{w}, 0.1f, 0.f}, {{b}, 0.1f, 0.f}});
  opt.set_group_lr(1, 0.f);
  EXPECT_FLOAT_EQ(opt.current_lr(0), 0.1f);
  EXPECT_FLOAT_EQ(opt.current_lr(1), 0.f);
  for (int t = 0; t < 300; ++t) {
    opt.zero_grad();
    EXPECT_FALSE(w.grad().defined());
    Tensor loss = add(sum(square(sub(w, target))), sum(square(b)));
    loss.backward();
    opt.step();
  }
  EXPECT_LT(test::rel_error(w, target), 1e-2);
  EXPECT_EQ(b.to_vector(), b0.to_vector());  // lr 0: unchanged (no weight decay either)
  opt.set_lr_scale(0.5f);                    // clears the override
  EXPECT_FLOAT_EQ(opt.current_lr(0), 0.05f);
  EXPECT_FLOAT_EQ(opt.current_lr(1), 0.05f);
}

// ---------------------------------------------------------------------------------------------
// State for checkpoints: N steps straight equal N/2 + save + load into a fresh optimizer + N/2.

template <class Make>
void check_resume(Make make) {
  auto straight = initial_params();
  auto opt1 = make(straight);
  for (int t = 0; t < kSteps; ++t) {
    set_grads(straight, t);
    opt1->step();
  }
  auto first = initial_params();
  auto opt2 = make(first);
  for (int t = 0; t < kSteps / 2; ++t) {
    set_grads(first, t);
    opt2->step();
  }
  auto saved = state_map(*opt2);
  std::vector<Tensor> resumed;
  for (auto& p : first) {
    Tensor c = p.detach().clone();
    c.set_requires_grad(true);
    resumed.push_back(c);
  }
  auto opt3 = make(resumed);
  opt3->load_state(saved);
  EXPECT_EQ(opt3->step_count(), kSteps / 2);
  for (int t = kSteps / 2; t < kSteps; ++t) {
    set_grads(resumed, t);
    opt3->step();
  }
  for (int i = 0; i < kParams; ++i)
    EXPECT_EQ(resumed[i].to_vector(), straight[i].to_vector()) << opt1->name() << " param " << i;
  auto a = state_map(*opt1), b = state_map(*opt3);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, t] : a) {
    ASSERT_TRUE(b.count(k)) << k;
    if (t.dtype() == DType::I64)
      EXPECT_EQ(t.to_vector_i64(), b.at(k).to_vector_i64()) << k;
    else
      EXPECT_EQ(t.to_vector(), b.at(k).to_vector()) << k;
  }
}

TEST(OptimState, AdamWResumeIsBitExact) {
  check_resume([](std::vector<Tensor>& ps) {
    return std::make_unique<AdamW>(
        std::vector<ParamGroup>{{{ps[0], ps[2]}, 0.05f, 0.05f}, {{ps[1]}, 0.05f, 0.f}});
  });
}

TEST(OptimState, SgdMomentumResumeIsBitExact) {
  check_resume([](std::vector<Tensor>& ps) {
    return std::make_unique<SGD>(std::vector<ParamGroup>{{ps, 0.05f, 0.01f}},
                                 SgdOptions{0.9f, 0.f, true});
  });
}

TEST(OptimState, NamesAreStableAndLoadRejectsBadEntries) {
  auto ps = initial_params();
  AdamW opt({{ps, 0.01f, 0.f}});
  EXPECT_EQ(opt.state().size(), 1u);  // only "adamw.steps" before any update
  set_grads(ps, 0);
  opt.step();
  auto st = state_map(opt);
  std::set<std::string> names;
  for (const auto& [k, t] : st) names.insert(k);
  EXPECT_EQ(names,
            (std::set<std::string>{"adamw.steps", "adamw.step.0.0", "adamw.m.0.0", "adamw.v.0.0",
                                   "adamw.step.0.1", "adamw.m.0.1", "adamw.v.0.1", "adamw.step.0.2",
                                   "adamw.m.0.2", "adamw.v.0.2"}));
  EXPECT_EQ(st.at("adamw.m.0.2").shape(), ps[2].shape());

  auto bad = st;
  bad["adamw.m.0.7"] = st.at("adamw.m.0.0");
  expect_error([&] { opt.load_state(bad); }, {"adamw.m.0.7", "does not have"});
  bad = st;
  bad["adamw.m.0.1"] = Tensor::zeros({3});
  expect_error([&] { opt.load_state(bad); }, {"adamw.m.0.1", "[3]", "[7]"});
  bad = st;
  bad.erase("adamw.v.0.2");
  expect_error([&] { opt.load_state(bad); }, {"adamw.v.0.2", "missing"});
  bad = st;
  bad["sgd.momentum_buffer.0.0"] = st.at("adamw.m.0.0");
  expect_error([&] { opt.load_state(bad); }, {"sgd.momentum_buffer.0.0", "adamw"});
  bad = st;
  bad["adamw.mom.0.0"] = st.at("adamw.m.0.0");
  expect_error([&] { opt.load_state(bad); }, {"adamw.mom.0.0", "unknown slot"});
  bad = st;
  bad.erase("adamw.steps");
  expect_error([&] { opt.load_state(bad); }, {"adamw.steps", "missing"});
  // A failed load leaves the state as it was.
  auto after = state_map(opt);
  EXPECT_EQ(after.at("adamw.m.0.1").to_vector(), st.at("adamw.m.0.1").to_vector());
}

// ---------------------------------------------------------------------------------------------
// Bad hyper-parameters and gradients

TEST(OptimErrors, BadHyperParametersNameTheField) {
  auto ps = initial_params();
  expect_error([&] { AdamW({{ps, -0.1f, 0.f}}); }, {"adamw", "lr", "-0.1"});
  expect_error([&] { AdamW({{ps, 0.1f, -1.f}}); }, {"adamw", "weight_decay", "-1"});
  expect_error([&] { AdamW({{ps, 0.1f, 0.f}}, {1.f, 0.999f, 1e-8f}); }, {"beta1", "[0, 1)"});
  expect_error([&] { AdamW({{ps, 0.1f, 0.f}}, {-0.1f, 0.999f, 1e-8f}); }, {"beta1"});
  expect_error([&] { Adam({{ps, 0.1f, 0.f}}, {0.9f, 1.5f, 1e-8f}); }, {"adam", "beta2", "1.5"});
  expect_error([&] { AdamW({{ps, 0.1f, 0.f}}, {0.9f, 0.999f, 0.f}); }, {"eps", "> 0"});
  expect_error([&] { SGD({{ps, -1.f, 0.f}}); }, {"sgd", "lr"});
  expect_error([&] { SGD({{ps, 0.1f, 0.f}}, {-0.5f, 0.f, false}); }, {"sgd", "momentum"});
  expect_error([&] { SGD({{ps, 0.1f, 0.f}}, {0.f, 0.f, true}); }, {"nesterov", "momentum"});
  expect_error([&] { SGD({{ps, 0.1f, 0.f}}, {0.9f, 0.5f, true}); }, {"nesterov", "dampening"});
  expect_error([&] { AdamW({{{ps[0], ps[1], ps[0]}, 0.1f, 0.f}}); }, {"more than once", "[3, 5]"});
  expect_error([&] { AdamW({{{Tensor::zeros({2}, DType::F64)}, 0.1f, 0.f}}); }, {"f32", "f64"});
  AdamW ok({{ps, 0.1f, 0.f}});
  expect_error([&] { ok.set_lr_scale(-1.f); }, {"lr scale"});
  expect_error([&] { ok.set_group_lr(3, 0.1f); }, {"group 3", "out of range"});
  expect_error([&] { ok.set_group_lr(0, std::nanf("")); }, {"lr of group 0"});
}

// An AdamW whose update can be made to throw, as a device's update could (out of memory).
class FailingAdamW : public AdamW {
 public:
  using AdamW::AdamW;
  bool fail = false;

 protected:
  void update(const std::vector<Pending>& list, Device dev) override {
    if (fail) throw Error("injected update failure");
    AdamW::update(list, dev);
  }
};

// A step whose update throws leaves the parameter, its step count and the optimizer's step count
// as they were, so the next step is the one an uninterrupted run takes (bias correction included).
TEST(OptimErrors, AFailedUpdateLeavesTheStepCountsAlone) {
  Tensor p = test::requires_grad(test::randn({7}, 51)), q = test::requires_grad(p.detach().clone());
  FailingAdamW failing({ParamGroup{{p}, 0.1f, 0.01f}});
  AdamW plain({ParamGroup{{q}, 0.1f, 0.01f}});
  auto grads = [&](uint64_t seed) {
    p.set_grad(test::randn({7}, seed));
    q.set_grad(test::randn({7}, seed));
  };
  grads(52);
  failing.step();
  plain.step();
  grads(53);
  failing.fail = true;
  const std::vector<float> before = p.to_vector();
  expect_error([&] { failing.step(); }, {"injected update failure"});
  EXPECT_EQ(p.to_vector(), before);
  EXPECT_EQ(failing.step_count(), 1);
  int64_t param_steps = -1;
  for (const auto& [name, t] : failing.state())
    if (name == failing.name() + std::string(".step.0.0")) param_steps = t.to_vector_i64()[0];
  EXPECT_EQ(param_steps, 1);
  failing.fail = false;
  failing.step();
  plain.step();
  EXPECT_EQ(p.to_vector(), q.to_vector());  // the second step's bias correction, as uninterrupted
}

TEST(OptimErrors, BadGradientsAndKernelInputs) {
  auto ps = initial_params();
  AdamW opt({{ps, 0.1f, 0.f}});
  ps[1].set_grad(Tensor::zeros({6}));
  expect_error([&] { opt.step(); }, {"adamw.step", "param 0.1", "[6]", "[7]"});

  Tensor p = Tensor::zeros({4}), g = Tensor::zeros({5}), m = Tensor::zeros({4}),
         v = Tensor::zeros({4});
  AdamHyper h;
  expect_error([&] { backend_for(p).adam_update(p, g, m, v, h); },
               {"adam_update", "grad", "[5]", "[4]"});
  h.step = 0;
  expect_error([&] { backend_for(p).adam_update(p, m, m, v, h); }, {"adam_update", "step"});
  Tensor buf = Tensor::zeros({3});
  SgdHyper sh;
  sh.momentum = 0.9f;
  expect_error([&] { backend_for(p).sgd_update(p, m, buf, sh); },
               {"sgd_update", "momentum_buffer", "[3]"});
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping against torch.nn.utils.clip_grad_norm_

std::vector<Tensor> clip_params(Tensor* no_grad) {
  std::vector<Tensor> ps;
  for (int i = 0; i < kParams; ++i) {
    const Tensor& g = fixture().at("clip.g." + std::to_string(i));
    Tensor p = Tensor::zeros(g.shape());
    p.set_requires_grad(true);
    p.set_grad(g.clone());
    ps.push_back(p);
  }
  if (no_grad) ps.insert(ps.begin() + 1, *no_grad);  // skipped
  return ps;
}

TEST(ClipGradNorm, ClipsWhenNormExceedsMax) {
  Tensor spare = Tensor::ones({4});
  spare.set_requires_grad(true);
  auto ps = clip_params(&spare);
  Tensor norm = clip_grad_norm(ps, fixture().param_f("clip.small.max_norm"));
  EXPECT_EQ(norm.dim(), 0);
  EXPECT_TRUE(norm.device() == ps[0].device());
  EXPECT_LE(std::fabs(norm.item() / fixture().at("clip.small.norm").item() - 1.f), 1e-6);
  EXPECT_FALSE(spare.grad().defined());
  int j = 0;
  for (int i = 0; i < kParams; ++i, ++j) {
    if (j == 1) ++j;  // the parameter without a grad
    EXPECT_LE(test::rel_error(ps[j].grad(), fixture().at("clip.small.g." + std::to_string(i))),
              1e-6)
        << "grad " << i;
  }
}

// A parameter listed twice counts once in the norm and is scaled once (the multi-tensor scale
// must never see one gradient twice: on the GPU two blocks would race on it).
TEST(ClipGradNorm, ADuplicatedParameterCountsOnce) {
  Tensor p = test::requires_grad(test::randn({5}, 31)),
         q = test::requires_grad(test::randn({3}, 32));
  p.set_grad(test::randn({5}, 33, 3.f));
  q.set_grad(test::randn({3}, 34, 3.f));
  Tensor p2 = test::requires_grad(p.detach().clone()), q2 = test::requires_grad(q.detach().clone());
  p2.set_grad(p.grad().clone());
  q2.set_grad(q.grad().clone());
  Tensor n1 = clip_grad_norm({p, q, p}, 1.f);
  Tensor n2 = clip_grad_norm({p2, q2}, 1.f);
  EXPECT_FLOAT_EQ(n1.item(), n2.item());
  EXPECT_EQ(p.grad().to_vector(), p2.grad().to_vector());
  EXPECT_EQ(q.grad().to_vector(), q2.grad().to_vector());
}

TEST(ClipGradNorm, LeavesGradsBelowMaxUnchanged) {
  auto ps = clip_params(nullptr);
  Tensor norm = clip_grad_norm(ps, fixture().param_f("clip.large.max_norm"));
  EXPECT_LE(std::fabs(norm.item() / fixture().at("clip.large.norm").item() - 1.f), 1e-6);
  for (int i = 0; i < kParams; ++i) {
    EXPECT_EQ(ps[i].grad().to_vector(),
              fixture().at("clip.large.g." + std::to_string(i)).to_vector())
        << "grad " << i;
    EXPECT_EQ(ps[i].grad().to_vector(), fixture().at("clip.g." + std::to_string(i)).to_vector());
  }
}

TEST(ClipGradNorm, NonFiniteNormIsReturnedForTheCallerToCheck) {
  auto ps = clip_params(nullptr);
  Tensor g = ps[0].grad();
  std::vector<float> v = g.to_vector();
  v[2] = std::numeric_limits<float>::quiet_NaN();
  ps[0].set_grad(Tensor::from_vector(v, g.shape()));
  Tensor norm = clip_grad_norm(ps, 1.f);
  EXPECT_TRUE(std::isnan(norm.item()));
  // NaN norm: clip factor 1, the gradients keep their values.
  EXPECT_EQ(ps[1].grad().to_vector(), fixture().at("clip.g.1").to_vector());

  ps = clip_params(nullptr);
  v = ps[0].grad().to_vector();
  v[0] = std::numeric_limits<float>::infinity();
  ps[0].set_grad(Tensor::from_vector(v, g.shape()));
  norm = clip_grad_norm(ps, 1.f);
  EXPECT_TRUE(std::isinf(norm.item()));
  // Infinite norm: factor 0 (as PyTorch): finite entries become 0.
  for (float x : ps[1].grad().to_vector()) EXPECT_EQ(x, 0.f);
}

TEST(ClipGradNorm, EdgeCasesAndErrors) {
  Tensor p = Tensor::zeros({3});
  p.set_requires_grad(true);
  EXPECT_EQ(clip_grad_norm({p}, 1.f).item(), 0.f);  // no gradients at all
  EXPECT_EQ(clip_grad_norm({}, 1.f).item(), 0.f);
  expect_error([&] { clip_grad_norm({p}, 0.f); }, {"clip_grad_norm", "max_norm"});
  p.set_grad(Tensor::zeros({3}, DType::F64));
  expect_error([&] { clip_grad_norm({p}, 1.f); }, {"clip_grad_norm", "f64"});
  // A non-contiguous gradient is made contiguous and scaled.
  Tensor q = Tensor::zeros({3, 2});
  q.set_requires_grad(true);
  q.set_grad(Tensor::from_vector({3.f, 0.f, 0.f, 4.f, 0.f, 0.f}, {2, 3}).permute_view({1, 0}));
  Tensor n = clip_grad_norm({q}, 1.f);
  EXPECT_FLOAT_EQ(n.item(), 5.f);
  EXPECT_TRUE(q.grad().is_contiguous());
  std::vector<float> got = q.grad().to_vector();
  float c = 1.f / (5.f + 1e-6f);
  std::vector<float> want = {3 * c, 4 * c, 0, 0, 0, 0};
  for (int i = 0; i < 6; ++i) EXPECT_FLOAT_EQ(got[i], want[i]) << i;
}

// ---------------------------------------------------------------------------------------------
// Schedules against timm's CosineLRScheduler and torch's StepLR

void expect_schedule(const LrSchedule& s, const std::string& fixture_key) {
  std::vector<float> want = fixture().at(fixture_key).to_vector();
  for (size_t t = 0; t < want.size(); ++t) {
    float got = s.lr_at(static_cast<int64_t>(t));
    EXPECT_LE(std::fabs(got - want[t]), 1e-6 * std::fabs(want[t]) + 1e-12)
        << fixture_key << " step " << t << ": " << got << " vs " << want[t];
  }
}

// timm's CosineLRScheduler arguments of fixture case `name` as a CosineScheduleConfig: with
// warmup_prefix the cosine's t_initial steps follow the warm-up, so the whole schedule is
// warmup_t + t_initial long; without it, t_initial long.
CosineScheduleConfig cosine_config(const std::string& name) {
  const test::Fixture& f = fixture();
  const std::string p = "sched." + name + ".";
  CosineScheduleConfig c;
  c.base_lr = f.param_f(p + "base_lr");
  c.min_lr = f.param_f(p + "lr_min");
  const bool warmup = f.param(p.substr(0, p.size() - 1)).contains("warmup_t");
  if (warmup) {
    c.warmup_start_lr = f.param_f(p + "warmup_lr_init");
    c.warmup_steps = f.param_i(p + "warmup_t");
    c.warmup_prefix = f.param_b(p + "warmup_prefix");
  }
  c.total_steps = f.param_i(p + "t_initial") + (warmup && c.warmup_prefix ? c.warmup_steps : 0);
  return c;
}

TEST(Schedule, CosineMatchesTimm) {
  expect_schedule(CosineSchedule(cosine_config("cosine_prefix")), "sched.cosine_prefix");
  expect_schedule(CosineSchedule(cosine_config("cosine_overlay")), "sched.cosine_overlay");
  expect_schedule(CosineSchedule(cosine_config("cosine_nowarmup")), "sched.cosine_nowarmup");
}

TEST(Schedule, CosineClosedFormPoints) {
  CosineScheduleConfig c;
  c.base_lr = 1.f;
  c.min_lr = 0.2f;
  c.warmup_start_lr = 0.1f;
  c.warmup_steps = 10;
  c.total_steps = 110;
  CosineSchedule s(c);
  EXPECT_FLOAT_EQ(s.lr_at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_at(5), 0.55f);   // half way through the linear warm-up
  EXPECT_FLOAT_EQ(s.lr_at(10), 1.f);    // peak
  EXPECT_FLOAT_EQ(s.lr_at(60), 0.6f);   // cosine midpoint: (base + min) / 2
  EXPECT_FLOAT_EQ(s.lr_at(110), 0.2f);  // end and after
  EXPECT_FLOAT_EQ(s.lr_at(1000), 0.2f);
  EXPECT_FLOAT_EQ(s.lr_at(35), static_cast<float>(0.2 + 0.4 * (1 + std::sqrt(0.5))));  // quarter
  EXPECT_EQ(s.base_lr(), 1.f);
}

TEST(Schedule, StepMatchesTorchStepLR) {
  const test::Fixture& f = fixture();
  StepSchedule s(f.param_f("sched.step.base_lr"), f.param_i("sched.step.step_size"),
                 f.param_f("sched.step.gamma"));
  expect_schedule(s, "sched.step");
  EXPECT_FLOAT_EQ(s.lr_at(6), 0.1f);
  EXPECT_FLOAT_EQ(s.lr_at(7), 0.05f);
  EXPECT_FLOAT_EQ(s.lr_at(21), 0.0125f);
}

TEST(Schedule, BadValuesNameTheField) {
  CosineScheduleConfig c;
  c.warmup_steps = 10;
  c.total_steps = 10;
  expect_error([&] { CosineSchedule s(c); }, {"total_steps", "warmup_steps", "10"});
  c = {};
  c.total_steps = 0;
  expect_error([&] { CosineSchedule s(c); }, {"total_steps"});
  c = {};
  c.base_lr = -1.f;
  expect_error([&] { CosineSchedule s(c); }, {"base_lr", "-1"});
  c = {};
  c.min_lr = -1e-5f;
  expect_error([&] { CosineSchedule s(c); }, {"min_lr"});
  c = {};
  c.warmup_start_lr = std::numeric_limits<float>::infinity();
  expect_error([&] { CosineSchedule s(c); }, {"warmup_start_lr"});
  c = {};
  c.warmup_steps = -1;
  expect_error([&] { CosineSchedule s(c); }, {"warmup_steps", "-1"});
  expect_error([&] { CosineSchedule(CosineScheduleConfig{}).lr_at(-2); }, {"step", "-2"});
  expect_error([&] { StepSchedule s(0.1f, 5, 0.f); }, {"gamma"});
  expect_error([&] { StepSchedule s(0.1f, 5, -0.5f); }, {"gamma", "-0.5"});
  expect_error([&] { StepSchedule s(0.1f, 0, 0.5f); }, {"step_size"});
  expect_error([&] { StepSchedule s(-0.1f, 5, 0.5f); }, {"base_lr"});
}

// ---------------------------------------------------------------------------------------------
// Weight-decay groups against timm's param_groups_weight_decay on a tiny DeiT

TEST(DecayGroups, MatchesTimmOnDeiT) {
  NamedTensors named;
  std::map<const TensorImpl*, std::pair<std::string, bool>> want;
  for (const auto& [k, t] : fixture().tensors()) {
    if (k.rfind("groups.", 0) != 0) continue;
    std::vector<int64_t> v = t.to_vector_i64();
    Tensor p = Tensor::zeros(Shape(v.begin() + 1, v.end()));
    p.set_requires_grad(true);
    std::string name = k.substr(7);
    named.emplace_back(name, p);
    want[p.impl()] = {name, v[0] == 1};
  }
  ASSERT_GT(named.size(), 10u);
  Tensor frozen = Tensor::zeros({4, 4});  // not requiring grad: left out
  named.emplace_back("frozen.weight", frozen);
  const float group_wd = fixture().param_f("groups.weight_decay");
  auto groups = decay_groups(named, 0.3f, group_wd);
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(groups[0].weight_decay, 0.f);
  EXPECT_EQ(groups[1].weight_decay, group_wd);
  EXPECT_EQ(groups[0].lr, 0.3f);
  EXPECT_EQ(groups[1].lr, 0.3f);
  EXPECT_EQ(groups[0].params.size() + groups[1].params.size(), want.size());
  for (int g = 0; g < 2; ++g) {
    for (const Tensor& p : groups[g].params) {
      ASSERT_TRUE(want.count(p.impl()));
      EXPECT_EQ(want[p.impl()].second, g == 1) << want[p.impl()].first;
    }
  }
}

TEST(DecayGroups, RulesAndCustomNames) {
  auto mk = [](Shape s) {
    Tensor t = Tensor::zeros(s);
    t.set_requires_grad(true);
    return t;
  };
  NamedTensors named = {{"fc.weight", mk({3, 4})},         {"fc.bias", mk({3})},
                        {"odd.bias", mk({2, 2})},          {"scale", mk({5})},
                        {"pos_embed", mk({1, 4, 3})},      {"my_token", mk({1, 1, 3})},
                        {"block.pos_embed", mk({1, 4, 3})}};
  auto g = decay_groups(named, 1.f, 0.1f);
  auto names = [&](const ParamGroup& pg) {
    std::vector<std::string> out;
    for (const Tensor& p : pg.params)
      for (const auto& [n, t] : named)
        if (t.impl() == p.impl()) out.push_back(n);
    return out;
  };
  EXPECT_EQ(names(g[0]), (std::vector<std::string>{"fc.bias", "odd.bias", "scale", "pos_embed"}));
  EXPECT_EQ(names(g[1]), (std::vector<std::string>{"fc.weight", "my_token", "block.pos_embed"}));
  g = decay_groups(named, 1.f, 0.1f, {"my_token"});
  EXPECT_EQ(names(g[0]), (std::vector<std::string>{"fc.bias", "odd.bias", "scale", "my_token"}));
}

}  // namespace
}  // namespace mokd
