// MoKD step: 20 steps against the PyTorch reference (tests/data/mokd_step.safetensors from
// tools/make_reference.py mokd_step; the models, shapes and hyper-parameters come from its params),
// plus the same 20 steps in the bf16 mode against the f32 reference, the baselines, K = 2 modes
// and diagnostics.
#include <algorithm>
#include <cmath>
#include <cstdio>

#include "engine/precision.h"
#include "models/registry.h"
#include "models/vit.h"
#include "mokd/distill.h"
#include "tests/test_util.h"

#ifdef MOKD_WITH_CUDA
#include "engine/cuda/cuda_backend.h"  // cuda_allocator()
#endif

namespace mokd {
namespace {

io::TensorMap with_prefix(const io::TensorMap& all, const std::string& prefix) {
  io::TensorMap out;
  for (auto& [k, v] : all)
    if (k.rfind(prefix, 0) == 0) out[k.substr(prefix.size())] = v;
  return out;
}

// The reference's teacher ("teacher") or student ("student"), from the fixture's params.
ViTConfig tiny_vit(const test::Fixture& fx, const std::string& which, bool distilled) {
  ViTConfig c;
  c.img_size = fx.param_i("img_size");
  c.patch_size = fx.param_i("patch_size");
  c.in_chans = fx.param_i("in_chans");
  c.num_classes = fx.param_i("num_classes");
  c.embed_dim = fx.param_i(which + ".embed_dim");
  c.depth = fx.param_i(which + ".depth");
  c.num_heads = fx.param_i(which + ".num_heads");
  c.mlp_ratio = fx.param_d(which + ".mlp_ratio");
  c.distilled = distilled;
  return c;
}

struct Pair {
  std::unique_ptr<VisionTransformer> teacher, student;
};

Pair load_pair(const test::Fixture& fx, Device dev = Device::cpu()) {
  Pair p;
  p.teacher = std::make_unique<VisionTransformer>(tiny_vit(fx, "teacher", false));
  p.student = std::make_unique<VisionTransformer>(tiny_vit(fx, "student", true));
  p.teacher->load_state_dict(with_prefix(fx.tensors(), "teacher."));
  p.student->load_state_dict(with_prefix(fx.tensors(), "student."));
  p.teacher->to(dev);
  p.student->to(dev);
  return p;
}

// Batch b of the fixture's inputs: images [B, H, W, C] and labels [B].
std::pair<Tensor, Tensor> batch(const test::Fixture& fx, int64_t b) {
  const int64_t B = fx.param_i("batch"), H = fx.param_i("img_size"), C = fx.param_i("in_chans");
  return {narrow(fx.at("images"), 0, b, 1).view({B, H, H, C}),
          narrow(fx.at("labels"), 0, b, 1).view({B})};
}

// The reference's MoKD configuration and optimizer, from the fixture's params.
DistillConfig reference_config(const test::Fixture& fx) {
  DistillConfig cfg;
  cfg.method = Method::MoKD;
  cfg.temperature = fx.param_f("temperature");
  cfg.label_smoothing = fx.param_f("label_smoothing");
  cfg.feat_beta = fx.param_f("feat_beta");
  cfg.grad_clip = fx.param_f("grad_clip");
  cfg.famo.lr = fx.param_f("famo.lr");
  cfg.famo.weight_decay = fx.param_f("famo.weight_decay");
  cfg.famo.beta1 = fx.param_fv("famo.betas").at(0);
  cfg.famo.beta2 = fx.param_fv("famo.betas").at(1);
  cfg.famo.adam_eps = fx.param_f("famo.adam_eps");
  cfg.famo.eps = fx.param_f("famo.eps");
  return cfg;
}

AdamW reference_optimizer(const test::Fixture& fx, const std::vector<Tensor>& params) {
  const std::vector<float> betas = fx.param_fv("optimizer.betas");
  return AdamW(
      {ParamGroup{params, fx.param_f("optimizer.lr"), fx.param_f("optimizer.weight_decay")}},
      {betas.at(0), betas.at(1), fx.param_f("optimizer.eps")});
}

void check_mokd_reference(Device dev) {
  test::Fixture fx("mokd_step.safetensors");
  Pair m = load_pair(fx, dev);
  const DistillConfig cfg = reference_config(fx);
  Distiller d(*m.student, *m.teacher, cfg);
  auto proj = d.projector_parameters();
  ASSERT_EQ(proj.size(), 1u);
  proj[0].second.copy_(fx.at("projector0"));
  std::vector<Tensor> params = m.student->parameters();
  params.push_back(proj[0].second);
  AdamW opt = reference_optimizer(fx, params);

  const int64_t steps = fx.param_i("steps"), batches = fx.param_i("batches");
  const int64_t dt = fx.param_i("teacher.embed_dim"), ds = fx.param_i("student.embed_dim");
  for (int64_t s = 0; s < steps; ++s) {
    std::string step = "step " + std::to_string(s + 1);
    auto [xs, ys] = batch(fx, s % batches);
    Tensor x = xs.to(dev), y = ys.to(dev);
    test::expect_close(d.famo()->weights(), narrow(fx.at("z_before"), 0, s, 1).view({3}), 1e-5,
                       1e-7, step + " z before");
    if (s == 0) {
      // Gradients of step 1, after backward and before clipping: run the step's first half here.
      Pair g = load_pair(fx, dev);
      Distiller dg(*g.student, *g.teacher, cfg);
      dg.projector_parameters()[0].second.copy_(fx.at("projector0"));
      std::vector<Tensor> gp = g.student->parameters();
      gp.push_back(dg.projector_parameters()[0].second);
      SGD zero_lr({ParamGroup{gp, 0.f, 0.f}});
      dg.step(zero_lr, x, y);  // lr 0: parameters stay; gradients are clipped in place
      // Undo the clip factor: compare directions via the clip-free projector gradient ratio.
      auto named = g.student->named_parameters();
      double ref_sq = 0, our_sq = 0;
      for (auto& [n, p] : named) {
        ref_sq += sum(square(fx.at("grad1." + n))).item();
        our_sq += sum(square(p.grad())).item();
      }
      ref_sq += sum(square(fx.at("grad1.projector"))).item();
      our_sq += sum(square(dg.projector_parameters()[0].second.grad())).item();
      double ref_norm = std::sqrt(ref_sq), factor = std::min(1.0, 1.0 / (ref_norm + 1e-6));
      EXPECT_NEAR(std::sqrt(our_sq), ref_norm * factor, 1e-4 * ref_norm * factor);
      for (auto& [n, p] : named) {
        Tensor ref = fx.at("grad1." + n);
        if (ref.dim() == 4) ref = permute(ref, {0, 2, 3, 1});  // conv weight: OIHW (file) -> OHWI
        double err = test::rel_error(p.grad(), scale(ref, static_cast<float>(factor)));
        EXPECT_LT(err, 1e-4) << "gradient of " << n;
      }
    }
    StepStats st = d.step(opt, x, y);
    ASSERT_EQ(st.losses.size(), 3u);
    // atol 1e-6: the KL objective is a difference of two sums of magnitude ~2 (sum p log p and
    // sum p log q) that nearly cancel (KL ~ 0.01), so f32 rounding in either implementation alone
    // leaves ~5e-7 absolute; the other objectives agree to 1e-5 relative.
    test::expect_close(Tensor::from_vector(st.losses, {3}),
                       narrow(fx.at("losses"), 0, s, 1).view({3}), 1e-5, 1e-6, step + " losses");
    test::expect_close(d.famo()->weights(), narrow(fx.at("z_after"), 0, s, 1).view({3}), 1e-5, 1e-7,
                       step + " z after");
    test::expect_close(proj[0].second, narrow(fx.at("projector"), 0, s, 1).view({dt, ds}), 1e-4,
                       1e-5, step + " projector");
  }
}

TEST(Distill, MoKDMatchesPyTorchReferenceOver20Steps) { check_mokd_reference(Device::cpu()); }
// The bf16 mode (run.precision = bf16: products of bf16-rounded operands, f32 accumulation) on
// the same 20 steps, against the f32 reference: each product's operands carry a relative rounding
// error of up to 2^-9, so the objectives drift from the f32 trajectory by a small relative amount
// that grows with the steps; the KL objective, a near-cancelling difference of sums of magnitude
// ~2 (see above), is held to an absolute bound. Measured on the CPU emulation (2026-12-02): at
// most 7.7e-3 relative on task and feat, 2.2e-3 absolute on KL (whose values are ~1e-2) and
// 2.7e-4 on FAMO's weights over the 20 steps; the bounds below leave about 4x margin.
void check_mokd_reference_bf16(Device dev) {
  const MatmulPrecision saved = matmul_precision();
  set_matmul_precision(MatmulPrecision::BF16);
  test::Fixture fx("mokd_step.safetensors");
  Pair m = load_pair(fx, dev);
  const DistillConfig cfg = reference_config(fx);
  Distiller d(*m.student, *m.teacher, cfg);
  auto proj = d.projector_parameters();
  proj[0].second.copy_(fx.at("projector0"));
  std::vector<Tensor> params = m.student->parameters();
  params.push_back(proj[0].second);
  AdamW opt = reference_optimizer(fx, params);
  const int64_t steps = fx.param_i("steps"), batches = fx.param_i("batches");
  double worst_rel = 0, worst_kl = 0, worst_z = 0;
  for (int64_t s = 0; s < steps; ++s) {
    auto [xs, ys] = batch(fx, s % batches);
    StepStats st = d.step(opt, xs.to(dev), ys.to(dev));
    const std::vector<float> ref = narrow(fx.at("losses"), 0, s, 1).to_vector();
    const std::vector<float> z = d.famo()->weights().to_vector();
    const std::vector<float> zref = narrow(fx.at("z_after"), 0, s, 1).to_vector();
    for (int k : {0, 2}) worst_rel = std::max(worst_rel, std::fabs(st.losses[k] / ref[k] - 1.0));
    worst_kl = std::max(worst_kl, std::fabs(double(st.losses[1]) - ref[1]));
    for (int k = 0; k < 3; ++k) worst_z = std::max(worst_z, std::fabs(double(z[k]) - zref[k]));
  }
  set_matmul_precision(saved);
  std::printf(
      "bf16 vs f32 reference over %ld steps: task/feat relative %.3g, kl absolute %.3g, "
      "famo z absolute %.3g\n",
      (long)steps, worst_rel, worst_kl, worst_z);
  EXPECT_LT(worst_rel, 3e-2) << "task and feat, relative";
  EXPECT_LT(worst_kl, 1e-2) << "kl, absolute";
  EXPECT_LT(worst_z, 1e-3) << "FAMO's weights";
}

TEST(Distill, MoKDInBf16StaysNearTheF32ReferenceOver20Steps) {
  check_mokd_reference_bf16(Device::cpu());
}

// The GPU's bf16 products (cuBLASLt, cuDNN) on the same 20 steps, where a GPU is present.
TEST(CudaDistill, MoKDInBf16StaysNearTheF32ReferenceOver20Steps) {
  if (!device_available(Device::cuda()))
    GTEST_SKIP() << "no CUDA device: the GPU variant of the bf16 MoKD reference test needs one";
  check_mokd_reference_bf16(Device::cuda());
}

// The same 20 steps on the GPU in f32, where one is present.
TEST(CudaDistill, MoKDMatchesPyTorchReferenceOver20Steps) {
  if (!device_available(Device::cuda()))
    GTEST_SKIP() << "no CUDA device: the GPU variant of the MoKD reference test needs one";
  check_mokd_reference(Device::cuda());
}

// The caching allocator's promise (issue 3): once warm, a training step gets all its device
// memory from the cache: no cudaMalloc, in f32 and in the bf16 mode.
TEST(CudaDistill, SteadyStateStepsMakeNoCudaMalloc) {
  if (!device_available(Device::cuda()))
    GTEST_SKIP() << "no CUDA device: the allocator check needs one";
#ifdef MOKD_WITH_CUDA
  for (MatmulPrecision prec : {MatmulPrecision::F32, MatmulPrecision::BF16}) {
    set_matmul_precision(prec);
    ModelOverrides o;
    auto student = create_model("vit_fmnist_micro_distilled", o);
    auto teacher = create_model("resnet_fmnist_small", o);
    student->to(Device::cuda());
    teacher->to(Device::cuda());
    Distiller d(*student, *teacher, DistillConfig{});
    std::vector<Tensor> params = student->parameters();
    for (auto& [n, p] : d.projector_parameters()) params.push_back(p);
    AdamW opt({ParamGroup{params, 1e-3f, 0.05f}});
    Tensor x = test::randn({16, 28, 28, 1}, 5).to(Device::cuda());
    Tensor y = Tensor::from_vector_i64({0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2, 3, 4, 5}, {16},
                                       Device::cuda());
    for (int i = 0; i < 3; ++i) d.step(opt, x, y);  // warm: the cache fills
    const size_t before = cuda_allocator()->cuda_malloc_calls();
    for (int i = 0; i < 5; ++i) d.step(opt, x, y);
    EXPECT_EQ(cuda_allocator()->cuda_malloc_calls(), before)
        << precision_name(prec) << ": cudaMalloc called in steady-state steps";
  }
  set_matmul_precision(MatmulPrecision::F32);
#endif
}

TEST(Distill, BaselinesRunAndReduceTheirLoss) {
  test::Fixture fx("mokd_step.safetensors");
  auto [x, y] = batch(fx, 0);
  for (const char* name : {"none", "kd", "deit-hard", "vkd", "mokd"}) {
    Pair m = load_pair(fx);
    DistillConfig cfg;
    cfg.method = parse_method(name);
    Distiller d(*m.student, *m.teacher, cfg);
    std::vector<Tensor> params = m.student->parameters();
    for (auto& [n, p] : d.projector_parameters()) params.push_back(p);
    AdamW opt({ParamGroup{params, 3e-3f, 0.f}});
    StepStats first = d.step(opt, x, y), last;
    for (int i = 0; i < 15; ++i) last = d.step(opt, x, y);
    EXPECT_EQ(first.names, d.objective_names()) << name;
    EXPECT_LT(last.losses[0], first.losses[0])
        << name << ": task loss did not fall on a fixed batch";
  }
}

TEST(Distill, K2ModesAndDiagnostics) {
  test::Fixture fx("mokd_step.safetensors");
  auto [x, y] = batch(fx, 1);
  for (Weighting w : {Weighting::Famo, Weighting::Exact2, Weighting::Fixed}) {
    Pair m = load_pair(fx);
    DistillConfig cfg;
    cfg.num_objectives = 2;
    cfg.weighting = w;
    cfg.diagnostics_every = 1;
    Distiller d(*m.student, *m.teacher, cfg);
    std::vector<Tensor> params = m.student->parameters();
    for (auto& [n, p] : d.projector_parameters()) params.push_back(p);
    AdamW opt({ParamGroup{params, 1e-3f, 0.f}});
    StepStats st = d.step(opt, x, y);
    ASSERT_EQ(st.losses.size(), 2u);
    ASSERT_EQ(st.weights.size(), 2u);
    EXPECT_NEAR(st.weights[0] + st.weights[1], w == Weighting::Fixed ? 2.f : 1.f, 1e-5);
    ASSERT_TRUE(st.diagnostics);
    ASSERT_EQ(st.grad_cosine.size(), 1u);
    EXPECT_GE(st.grad_cosine[0], -1.0001f);
    EXPECT_LE(st.grad_cosine[0], 1.0001f);
    EXPECT_GT(st.grad_norm_ratio[0], 0.f);
  }
}

TEST(Distill, ExactTwoObjectiveSolutionMatchesBruteForce) {
  // pi* minimising ||pi g1 + (1 - pi) g2||^2 over [0, 1], against a fine grid search.
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    auto g1 = test::randn({13}, seed).to_vector();
    auto g2 = test::randn({13}, seed + 100, seed % 3 == 0 ? 0.1f : 1.f).to_vector();
    double g22 = 0, g12 = 0, dd = 0;
    for (int i = 0; i < 13; ++i) {
      g22 += g2[i] * g2[i];
      g12 += g1[i] * g2[i];
      dd += (g1[i] - g2[i]) * (g1[i] - g2[i]);
    }
    double pi = std::clamp((g22 - g12) / dd, 0.0, 1.0);
    double best = 1e300, best_pi = -1;
    for (int k = 0; k <= 100000; ++k) {
      double p = k / 100000.0, n = 0;
      for (int i = 0; i < 13; ++i) n += std::pow(p * g1[i] + (1 - p) * g2[i], 2);
      if (n < best) best = n, best_pi = p;
    }
    EXPECT_NEAR(pi, best_pi, 2e-5) << "seed " << seed;
  }
}

TEST(Distill, BadConfigurationsAreErrors) {
  test::Fixture fx("mokd_step.safetensors");
  Pair m = load_pair(fx);
  DistillConfig c;
  c.temperature = 0.f;
  EXPECT_THROW(Distiller(*m.student, *m.teacher, c), Error);
  c = DistillConfig{};
  c.num_objectives = 3;
  c.weighting = Weighting::Exact2;
  EXPECT_THROW(Distiller(*m.student, *m.teacher, c), Error);
  c = DistillConfig{};
  c.method = Method::DeitHard;
  EXPECT_THROW(Distiller(*m.teacher, *m.student, c), Error);  // teacher-as-student has no dist head
  EXPECT_THROW(parse_method("mokd2"), Error);
}

}  // namespace
}  // namespace mokd
