// The CPU backend's bf16 activations (engine/kernel_args.h): every activation kernel run on bf16
// tensors must equal the same kernel run on f32 tensors holding the same (bf16-representable)
// values, rounded to bf16 once at the end, element for element and bit for bit. The f32 kernels
// are the reference (they are checked against PyTorch elsewhere); this pins down that the bf16
// path widens exactly, computes the f32 math unchanged and rounds once on store, nothing more.
// Statistics and parameter gradients (f32 outputs) must equal the f32 kernel's exactly. Then the
// ops level: in the bf16 mode a ViT and a ResNet step keep bf16 activations and activation
// gradients, f32 parameter gradients, and mix f32 parameters into bf16 activations correctly.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/precision.h"
#include "models/registry.h"
#include "mokd/distill.h"
#include "mokd/optim.h"
#include "mokd/projector.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

Backend& cpu() { return backend_for(Device::cpu()); }

// Random values representable in bf16, as an f32 tensor.
Tensor bf16_values(const Shape& s, uint64_t seed, float std = 1.f) {
  return test::randn(s, seed, std).to(DType::BF16).to(DType::F32);
}
Tensor empty(const Shape& s, DType dt) { return Tensor::empty(s, dt, Device::cpu()); }

// bf16 output == the f32 output rounded to bf16, bit for bit.
void expect_rounded_equal(const Tensor& b16, const Tensor& f32, const std::string& what) {
  ASSERT_EQ(b16.dtype(), DType::BF16) << what;
  const std::vector<float> a = b16.to_vector(), e = f32.to(DType::BF16).to_vector();
  ASSERT_EQ(a.size(), e.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (!(a[i] == e[i] || (a[i] != a[i] && e[i] != e[i])) && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << a.size() << " elements differ; first at "
                     << first << ": " << a[first] << " vs " << e[first];
}
void expect_equal(const Tensor& a, const Tensor& e, const std::string& what) {
  test::expect_close(a, e, 0.0, 0.0, what);
}

TEST(Bf16Activations, UnaryAndItsBackward) {
  Tensor x = bf16_values({257}, 1, 2.f), g = bf16_values({257}, 2);
  for (UnaryOp op : {UnaryOp::Gelu, UnaryOp::Relu, UnaryOp::Exp, UnaryOp::Square, UnaryOp::Scale,
                     UnaryOp::Neg, UnaryOp::SmoothL1}) {
    const std::string name = unary_name(op);
    Tensor y32 = empty({257}, DType::F32), y16 = empty({257}, DType::BF16);
    cpu().unary(op, x, y32, 0.7f);
    cpu().unary(op, x.to(DType::BF16), y16, 0.7f);
    expect_rounded_equal(y16, y32, name);
    Tensor gi32 = empty({257}, DType::F32), gi16 = empty({257}, DType::BF16);
    cpu().unary_backward(op, x, g, gi32, 0.7f);
    cpu().unary_backward(op, x.to(DType::BF16), g.to(DType::BF16), gi16, 0.7f);
    expect_rounded_equal(gi16, gi32, name + " backward");
  }
}

TEST(Bf16Activations, BinaryWithBf16OrF32SecondOperand) {
  const Shape s{3, 5, 7};
  Tensor a = bf16_values(s, 3), b = bf16_values(s, 4);
  Tensor row = test::randn({1, 1, 7}, 5);  // an f32 parameter, not bf16-representable
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
    const std::string name = "binary " + std::to_string(static_cast<int>(op));
    Tensor o32 = empty(s, DType::F32), o16 = empty(s, DType::BF16);
    cpu().binary(op, a, b, o32);
    cpu().binary(op, a.to(DType::BF16), b.to(DType::BF16), o16);
    expect_rounded_equal(o16, o32, name);
    // bf16 a with an f32 b, broadcast: the f32 operand is read as it is (not rounded first).
    cpu().binary(op, a, row.expand_view(s), o32);
    cpu().binary(op, a.to(DType::BF16), row.expand_view(s), o16);
    expect_rounded_equal(o16, o32, name + " with a broadcast f32 b");
  }
}

TEST(Bf16Activations, ReduceSumIntoF32OrBf16) {
  Tensor x = bf16_values({6, 9, 4}, 6);
  for (const Shape& os : {Shape{1, 9, 1}, Shape{6, 1, 4}, Shape{1, 1, 1}}) {
    Tensor r32 = empty(os, DType::F32), r16 = empty(os, DType::BF16), rf = empty(os, DType::F32);
    cpu().reduce_sum(x, r32, 0.5f);
    cpu().reduce_sum(x.to(DType::BF16), r16, 0.5f);
    cpu().reduce_sum(x.to(DType::BF16), rf, 0.5f);
    expect_rounded_equal(r16, r32, "reduce_sum to bf16 " + shape_str(os));
    expect_equal(rf, r32, "reduce_sum of bf16 into f32 " + shape_str(os));
  }
}

TEST(Bf16Activations, SoftmaxAndLogSoftmaxWithBackwards) {
  const Shape s{7, 33};
  Tensor x = bf16_values(s, 7, 3.f), g = bf16_values(s, 8);
  for (bool log : {false, true}) {
    const std::string name = log ? "log_softmax" : "softmax";
    Tensor y32 = empty(s, DType::F32), y16 = empty(s, DType::BF16);
    cpu().softmax(x, y32, log);
    cpu().softmax(x.to(DType::BF16), y16, log);
    expect_rounded_equal(y16, y32, name);
    // The backward reads the stored (bf16) output: the f32 reference reads the same values.
    Tensor yr = y16.to(DType::F32);
    Tensor g32 = empty(s, DType::F32), g16 = empty(s, DType::BF16);
    cpu().softmax_backward(yr, g, g32, log);
    cpu().softmax_backward(y16, g.to(DType::BF16), g16, log);
    expect_rounded_equal(g16, g32, name + " backward");
  }
}

TEST(Bf16Activations, LayerNormKeepsF32StatisticsAndParameterGradients) {
  const Shape s{10, 24};
  Tensor x = bf16_values(s, 9, 2.f), g = bf16_values(s, 10);
  Tensor w = test::randn({24}, 11), b = test::randn({24}, 12);  // f32 parameters
  Tensor y32 = empty(s, DType::F32), y16 = empty(s, DType::BF16);
  Tensor m32 = empty({10}, DType::F32), r32 = empty({10}, DType::F32);
  Tensor m16 = empty({10}, DType::F32), r16 = empty({10}, DType::F32);
  cpu().layer_norm(x, &w, &b, 1e-6f, y32, m32, r32);
  cpu().layer_norm(x.to(DType::BF16), &w, &b, 1e-6f, y16, m16, r16);
  expect_rounded_equal(y16, y32, "layer_norm");
  expect_equal(m16, m32, "layer_norm mean");
  expect_equal(r16, r32, "layer_norm rstd");
  Tensor gx32 = empty(s, DType::F32), gx16 = empty(s, DType::BF16);
  Tensor gw32 = empty({24}, DType::F32), gb32 = empty({24}, DType::F32);
  Tensor gw16 = empty({24}, DType::F32), gb16 = empty({24}, DType::F32);
  cpu().layer_norm_backward(g, x, &w, m32, r32, gx32, &gw32, &gb32);
  cpu().layer_norm_backward(g.to(DType::BF16), x.to(DType::BF16), &w, m32, r32, gx16, &gw16, &gb16);
  expect_rounded_equal(gx16, gx32, "layer_norm grad x");
  expect_equal(gw16, gw32, "layer_norm grad weight");
  expect_equal(gb16, gb32, "layer_norm grad bias");
}

TEST(Bf16Activations, BatchNormTrainEvalAndBackward) {
  const Shape s{2, 5, 4, 6};
  const Shape c{6};
  Tensor x = bf16_values(s, 13, 2.f), g = bf16_values(s, 14);
  Tensor w = test::randn(c, 15), b = test::randn(c, 16);
  Tensor rm32 = test::randn(c, 17), rv32 = test::uniform(c, 18, 0.5f, 2.f);
  Tensor rm16 = rm32.clone(), rv16 = rv32.clone();
  Tensor y32 = empty(s, DType::F32), y16 = empty(s, DType::BF16);
  Tensor sm32 = empty(c, DType::F32), si32 = empty(c, DType::F32);
  Tensor sm16 = empty(c, DType::F32), si16 = empty(c, DType::F32);
  cpu().batch_norm_train(x, w, b, rm32, rv32, 0.1f, 1e-5f, y32, sm32, si32);
  cpu().batch_norm_train(x.to(DType::BF16), w, b, rm16, rv16, 0.1f, 1e-5f, y16, sm16, si16);
  expect_rounded_equal(y16, y32, "batch_norm_train");
  expect_equal(sm16, sm32, "batch_norm_train mean");
  expect_equal(si16, si32, "batch_norm_train invstd");
  expect_equal(rm16, rm32, "batch_norm_train running mean");
  expect_equal(rv16, rv32, "batch_norm_train running var");
  cpu().batch_norm_eval(x, w, b, rm32, rv32, 1e-5f, y32);
  cpu().batch_norm_eval(x.to(DType::BF16), w, b, rm32, rv32, 1e-5f, y16);
  expect_rounded_equal(y16, y32, "batch_norm_eval");
  for (bool training : {true, false}) {
    Tensor gx32 = empty(s, DType::F32), gx16 = empty(s, DType::BF16);
    Tensor gw32 = empty(c, DType::F32), gb32 = empty(c, DType::F32);
    Tensor gw16 = empty(c, DType::F32), gb16 = empty(c, DType::F32);
    cpu().batch_norm_backward(g, x, w, sm32, si32, training, gx32, gw32, gb32);
    cpu().batch_norm_backward(g.to(DType::BF16), x.to(DType::BF16), w, sm32, si32, training, gx16,
                              gw16, gb16);
    const std::string mode = training ? " (training)" : " (eval)";
    expect_rounded_equal(gx16, gx32, "batch_norm_backward grad x" + mode);
    expect_equal(gw16, gw32, "batch_norm_backward grad weight" + mode);
    expect_equal(gb16, gb32, "batch_norm_backward grad bias" + mode);
  }
}

TEST(Bf16Activations, PoolingSumsOverlappingGradientsBeforeRoundingOnce) {
  Pool2dParams p;
  p.kernel_h = p.kernel_w = 3;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = 1;  // overlapping windows: an input gets several gradients
  const Shape s{2, 7, 6, 3};
  Tensor x = bf16_values(s, 19);
  Tensor y32 = empty({2, 4, 3, 3}, DType::F32), y16 = empty({2, 4, 3, 3}, DType::BF16);
  Tensor a32 = empty({2, 4, 3, 3}, DType::I64), a16 = empty({2, 4, 3, 3}, DType::I64);
  cpu().max_pool2d(x, p, y32, a32);
  cpu().max_pool2d(x.to(DType::BF16), p, y16, a16);
  expect_rounded_equal(y16, y32, "max_pool2d");
  EXPECT_EQ(a16.to_vector_i64(), a32.to_vector_i64());
  Tensor g = bf16_values({2, 4, 3, 3}, 20);
  Tensor gx32 = empty(s, DType::F32), gx16 = empty(s, DType::BF16);
  cpu().max_pool2d_backward(g, a32, gx32);
  cpu().max_pool2d_backward(g.to(DType::BF16), a32, gx16);
  expect_rounded_equal(gx16, gx32, "max_pool2d backward");
  cpu().avg_pool2d(x, p, y32);
  cpu().avg_pool2d(x.to(DType::BF16), p, y16);
  expect_rounded_equal(y16, y32, "avg_pool2d");
  cpu().avg_pool2d_backward(g, p, gx32);
  cpu().avg_pool2d_backward(g.to(DType::BF16), p, gx16);
  expect_rounded_equal(gx16, gx32, "avg_pool2d backward");
}

// A bf16 c takes a bf16 bias (as PyTorch's autocast rounds a linear's bias): the widened bias
// joins the f32 accumulator, and the sum is rounded once.
TEST(Bf16Activations, ProductsIntoBf16RoundOnceAfterTheBias) {
  Tensor a = bf16_values({9, 16}, 21), w = bf16_values({5, 16}, 22);
  Tensor bias = bf16_values({5}, 23, 10.f);
  Tensor c32 = empty({9, 5}, DType::F32), c16 = empty({9, 5}, DType::BF16);
  cpu().gemm(a.to(DType::BF16), w.to(DType::BF16), c32, false, true, 0.5f, 0.f);
  cpu().gemm(a.to(DType::BF16), w.to(DType::BF16), c16, false, true, 0.5f, 0.f);
  expect_rounded_equal(c16, c32, "gemm into bf16");
  cpu().gemm_bias(a.to(DType::BF16), w.to(DType::BF16), bias, c32);
  cpu().gemm_bias(a.to(DType::BF16), w.to(DType::BF16), bias.to(DType::BF16), c16);
  expect_rounded_equal(c16, c32, "gemm_bias into bf16");
}

// ---- ops level, in the bf16 mode ----

struct Bf16Mode {
  Bf16Mode() { set_matmul_precision(MatmulPrecision::BF16); }
  ~Bf16Mode() { set_matmul_precision(MatmulPrecision::F32); }
};

// An f32 parameter added to a bf16 activation: a bf16 result computed in f32 from the parameter
// as it is, its gradient reduced into f32 for the parameter.
TEST(Bf16Activations, F32ParameterMeetsBf16Activation) {
  Tensor x = bf16_values({4, 3, 8}, 24).to(DType::BF16);
  x.set_requires_grad(true);
  Tensor pos = test::requires_grad(test::randn({1, 3, 8}, 25));
  Tensor y = add(pos, x);  // the f32 operand first: swapped, still bf16
  EXPECT_EQ(y.dtype(), DType::BF16);
  Tensor expect = add(x.detach().to(DType::F32), pos.detach());
  expect_rounded_equal(y, expect, "bf16 activation + f32 parameter");
  sum(cast(y, DType::F32)).backward();
  ASSERT_TRUE(pos.grad().defined());
  EXPECT_EQ(pos.grad().dtype(), DType::F32);
  EXPECT_EQ(x.grad().dtype(), DType::BF16);
  expect_equal(pos.grad(), Tensor::full({1, 3, 8}, 4.0), "the parameter's gradient");
}

// One training step of each kind of model in the bf16 mode: the logits and every saved activation
// are bf16, parameter gradients f32 and finite, and they point the same way as the f32 step's.
// A CNN runs in eval mode: batch norm over a batch of 4 in training is ill-conditioned (perturbing
// the input by 2^-8 relative moves the f32 step's gradient by 31 %), eval mode is not (the bf16
// batch-norm training kernels are held to f32 above).
void check_model_step(const std::string& name, bool training) {
  ModelOverrides o;
  o.seed = 7;
  auto m16 = create_model(name, o), m32 = create_model(name, o);
  m16->train(training);
  m32->train(training);
  Tensor x = test::randn({4, 28, 28, 1}, 26);
  Tensor labels = Tensor::from_vector_i64({1, 0, 3, 2}, {4});
  Tensor logits16;
  {
    Bf16Mode mode;
    logits16 = m16->forward(x);
    cross_entropy(logits16, labels).backward();
  }
  cross_entropy(m32->forward(x), labels).backward();
  EXPECT_EQ(logits16.dtype(), DType::BF16) << name;
  auto p16 = m16->named_parameters(), p32 = m32->named_parameters();
  ASSERT_EQ(p16.size(), p32.size());
  std::vector<Tensor> all16, all32;
  for (size_t i = 0; i < p16.size(); ++i) {
    const Tensor& g16 = p16[i].second.grad();
    ASSERT_TRUE(g16.defined()) << name << " " << p16[i].first;
    EXPECT_EQ(g16.dtype(), DType::F32) << name << " " << p16[i].first;
    all16.push_back(reshape(g16, {-1}));
    all32.push_back(reshape(p32[i].second.grad(), {-1}));
  }
  // Single gradients that cancel over a batch of 4 (batch norm's) can be mostly rounding; the
  // whole gradient must agree with the f32 step's to the bf16 model tolerance.
  const double err = test::rel_error(concat(all16, 0), concat(all32, 0));
  EXPECT_LT(err, 3e-2) << name;
  EXPECT_GT(err, 1e-6) << name;  // the mode was on
}

TEST(Bf16Activations, ViTAndResNetStepsKeepBf16ActivationsAndF32ParameterGradients) {
  check_model_step("vit_fmnist_micro_distilled", true);
  check_model_step("resnet_fmnist_small", false);
}

// A MoKD step with FAMO in the bf16 mode, with either projector: every objective is an f32 scalar
// (FAMO's update, the step's values and the gradient sync read f32), and the step's values are
// finite. The bilinear projector's loss is composed from ops: it widens its bf16 products itself.
TEST(Bf16Activations, MoKDStepWithFamoKeepsF32ObjectivesWithEitherProjector) {
  for (ProjectorKind kind : {ProjectorKind::Stiefel, ProjectorKind::Bilinear}) {
    ModelOverrides o;
    o.seed = 2;
    auto student = create_model("vit_fmnist_micro_distilled", o);
    auto teacher = create_model("resnet_fmnist_small", o);
    DistillConfig cfg;
    cfg.projector = kind;
    cfg.diagnostics_every = 1;
    Bf16Mode mode;
    Distiller d(*student, *teacher, cfg);
    std::vector<Tensor> params = student->parameters();
    for (auto& [n, p] : d.projector_parameters()) params.push_back(p);
    AdamW opt({ParamGroup{params, 1e-3f, 0.05f}});
    Tensor x = test::randn({8, 28, 28, 1}, 28);
    Tensor y = Tensor::from_vector_i64({0, 1, 2, 3, 4, 5, 6, 7}, {8});
    for (int i = 0; i < 2; ++i) {
      StepStats st = d.step(opt, x, y);
      ASSERT_EQ(st.losses.size(), 3u);
      for (float l : st.losses) EXPECT_TRUE(std::isfinite(l));
    }
  }
}

// The projector's retraction belongs with the master weights: it stays f32 in the bf16 mode.
TEST(Bf16Activations, StiefelRetractionStaysF32InTheBf16Mode) {
  Tensor m = test::randn({24, 10}, 27);
  Bf16Mode mode;
  retract_to_stiefel(m);
  EXPECT_EQ(m.dtype(), DType::F32);
  EXPECT_LT(stiefel_error(m), 1e-5f);
  EXPECT_EQ(matmul_precision(), MatmulPrecision::BF16);  // restored after the retraction
}

}  // namespace
}  // namespace mokd
