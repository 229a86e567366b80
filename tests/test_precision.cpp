// MatmulPrecision::BF16: matmul/linear, conv2d and attention round their operands to bf16,
// accumulate in f32 and write bf16 activations; the CPU emulates it exactly, so each equals f32
// products of explicitly rounded tensors, rounded once. Parameter gradients are f32. The
// CudaPrecision tests compare the GPU's bf16 path with that emulation.
#include <cmath>
#include <functional>

#include "engine/precision.h"
#include "models/registry.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

struct Bf16Products {
  Bf16Products() { set_matmul_precision(MatmulPrecision::BF16); }
  ~Bf16Products() { set_matmul_precision(MatmulPrecision::F32); }
};

Tensor rounded(const Tensor& t) { return t.to(DType::BF16).to(DType::F32); }

TEST(Precision, LinearBf16EqualsF32OnRoundedOperands) {
  Tensor x = test::requires_grad(test::randn({5, 7, 9}, 1));
  Tensor w = test::requires_grad(test::randn({6, 9}, 2));
  Tensor b = test::requires_grad(test::randn({6}, 3));
  Tensor r = test::randn({5, 7, 6}, 4);  // upstream gradient
  Tensor y;
  {
    Bf16Products mode;
    y = linear(x, w, b);
    sum(mul(y, r)).backward();
  }
  EXPECT_EQ(y.dtype(), DType::BF16);  // a bf16 activation
  EXPECT_EQ(w.grad().dtype(), DType::F32);
  EXPECT_EQ(b.grad().dtype(), DType::F32);
  // Expected: f32 products of the rounded operands plus the rounded bias (as PyTorch's autocast),
  // rounded once. The incoming gradient is mul(y, r)'s: r rounded to bf16 (y's dtype); the bias
  // gradient sums it in f32.
  Tensor xr = rounded(x.detach()), wr = rounded(w.detach()), rr = rounded(r);
  test::expect_close(y.to(DType::F32), rounded(linear(xr, wr, rounded(b.detach()))), 1e-6, 1e-6,
                     "forward");
  test::expect_close(x.grad(), matmul(rr, wr), 1e-6, 1e-6, "grad x");
  test::expect_close(w.grad(), sum(matmul(transpose(rr, 1, 2), xr), {0}), 1e-5, 1e-5, "grad w");
  test::expect_close(b.grad(), sum(rr, {0, 1}), 1e-5, 1e-5, "grad b");
  // And it differs from f32 math: the mode is really on.
  EXPECT_GT(test::rel_error(y.to(DType::F32), linear(x.detach(), w.detach(), b.detach())), 1e-5);
}

TEST(Precision, MatmulBf16EqualsF32OnRoundedOperands) {
  Tensor a = test::requires_grad(test::randn({3, 4, 5}, 5));
  Tensor c = test::requires_grad(test::randn({3, 5, 2}, 6));
  Tensor r = test::randn({3, 4, 2}, 7);
  Tensor y;
  {
    Bf16Products mode;
    y = matmul(a, c);
    sum(mul(y, r)).backward();
  }
  Tensor ar = rounded(a.detach()), cr = rounded(c.detach()), rr = rounded(r);
  EXPECT_EQ(y.dtype(), DType::BF16);
  test::expect_close(y.to(DType::F32), rounded(matmul(ar, cr)), 1e-6, 1e-6, "forward");
  test::expect_close(a.grad(), matmul(rr, transpose(cr, 1, 2)), 1e-6, 1e-6, "grad a");
  test::expect_close(c.grad(), matmul(transpose(ar, 1, 2), rr), 1e-6, 1e-6, "grad b");
}

TEST(Precision, ViTInBf16StaysWithinBf16Tolerance) {
  ModelOverrides o;
  o.seed = 3;
  auto m = create_model("vit_fmnist_micro_distilled", o);
  Tensor x = test::randn({4, 28, 28, 1}, 8);
  Tensor y32 = m->forward(x), y16;
  {
    Bf16Products mode;
    y16 = m->forward(x);
  }
  EXPECT_EQ(y16.dtype(), DType::BF16);  // the logits are a bf16 activation too
  double err = test::rel_error(y16.to(DType::F32), y32);
  EXPECT_LT(err, 3e-2);  // the whole-model bf16 tolerance (docs/method.md, Decisions)
  EXPECT_GT(err, 1e-6);  // and not simply f32
}

// conv2d: bf16 operands, f32 accumulation, the result rounded to bf16 (cuDNN's bf16 convolution
// writes bf16), the f32 bias added to it and rounded again; backward products of the bf16
// incoming gradient, the parameter gradients f32.
void check_conv_bf16(const Shape& xs, const Shape& ws, const Conv2dParams& p, uint64_t seed) {
  Tensor x = test::requires_grad(test::randn(xs, seed));
  Tensor w = test::requires_grad(test::randn(ws, seed + 1, 0.3f));
  Tensor b = test::requires_grad(test::randn({ws[0]}, seed + 2));
  Tensor y;
  {
    Bf16Products mode;
    y = conv2d(x, w, b, p);
    EXPECT_EQ(y.dtype(), DType::BF16);
  }
  Tensor r = test::randn(y.shape(), seed + 3);
  {
    Bf16Products mode;
    sum(mul(y, r)).backward();
  }
  // The f32 reference on explicitly rounded operands, its products rounded like the bf16 path's.
  Tensor xr = test::requires_grad(rounded(x.detach())),
         wr = test::requires_grad(rounded(w.detach()));
  Tensor y0 = conv2d(xr, wr, Tensor(), p);
  sum(mul(y0, rounded(r))).backward();
  test::expect_close(y.to(DType::F32), rounded(add(rounded(y0.detach()), b.detach())), 1e-6, 1e-6,
                     "conv2d forward");
  test::expect_close(x.grad(), rounded(xr.grad()), 1e-6, 1e-6, "conv2d grad x");
  test::expect_close(w.grad(), rounded(wr.grad()), 1e-6, 1e-6, "conv2d grad w");
  test::expect_close(b.grad(), sum(rounded(r), {0, 1, 2}), 1e-5, 1e-5, "conv2d grad bias");
  EXPECT_GT(test::rel_error(y.to(DType::F32), conv2d(x.detach(), w.detach(), b.detach(), p)),
            1e-5);  // mode on
}

TEST(Precision, Conv2dBf16EqualsRoundedF32) {
  Conv2dParams p;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = 1;
  p.groups = 2;
  check_conv_bf16({2, 9, 7, 4}, {6, 3, 3, 2}, p, 20);
  check_conv_bf16({3, 5, 5, 8}, {5, 1, 1, 8}, Conv2dParams{}, 30);  // pointwise
}

// Attention: S = round(scale q k^T) on rounded q, k; P = round(softmax(S)) (f32 math inside);
// out = round(P round(v)). Each rounding may flip one bf16 ulp against the f32 reference's
// (other summation orders): the bound is one ulp (2^-8 relative).
TEST(Precision, AttentionBf16EqualsRoundedF32) {
  Tensor q = test::requires_grad(test::randn({2, 3, 13, 16}, 40));
  Tensor k = test::requires_grad(test::randn({2, 3, 11, 16}, 41));
  Tensor v = test::requires_grad(test::randn({2, 3, 11, 16}, 42));
  const float sc = 0.25f;
  Tensor y;
  {
    Bf16Products mode;
    y = scaled_dot_product_attention(q, k, v, sc);
  }
  Tensor qr = rounded(q.detach()), kr = rounded(k.detach()), vr = rounded(v.detach());
  Tensor prob = rounded(softmax(rounded(scale(matmul(qr, transpose(kr, 2, 3)), sc)), -1));
  EXPECT_EQ(y.dtype(), DType::BF16);
  test::expect_close(y.to(DType::F32), rounded(matmul(prob, vr)), 4e-3, 1e-3, "attention forward");
  // Gradients stay within the bf16 tolerance of exact f32 attention.
  Tensor r = test::randn(y.shape(), 43);
  {
    Bf16Products mode;
    sum(mul(y, r)).backward();
  }
  Tensor q32 = test::requires_grad(q.detach().clone()),
         k32 = test::requires_grad(k.detach().clone());
  Tensor v32 = test::requires_grad(v.detach().clone());
  Tensor y32 = scaled_dot_product_attention(q32, k32, v32, sc);
  sum(mul(y32, r)).backward();
  EXPECT_LT(test::rel_error(y.to(DType::F32), y32), 2e-2);
  EXPECT_GT(test::rel_error(y.to(DType::F32), y32), 1e-6);  // the mode is on
  EXPECT_LT(test::rel_error(q.grad(), q32.grad()), 2e-2);
  EXPECT_LT(test::rel_error(k.grad(), k32.grad()), 2e-2);
  EXPECT_LT(test::rel_error(v.grad(), v32.grad()), 2e-2);
}

TEST(Precision, ResNetInBf16StaysWithinBf16Tolerance) {
  ModelOverrides o;
  o.seed = 4;
  auto m = create_model("resnet_fmnist_small", o);
  m->eval();
  Tensor x = test::randn({4, 28, 28, 1}, 9);
  Tensor y32 = m->forward(x), y16;
  {
    Bf16Products mode;
    y16 = m->forward(x);
  }
  EXPECT_EQ(y16.dtype(), DType::BF16);
  double err = test::rel_error(y16.to(DType::F32), y32);
  EXPECT_LT(err, 3e-2);
  EXPECT_GT(err, 1e-6);
}

// The GPU's bf16 products (cuBLASLt, f32 accumulation) against the CPU's emulation.
TEST(CudaPrecision, LinearBf16MatchesCpu) {
  if (!device_available(Device::cuda()))
    GTEST_SKIP() << "no CUDA device: the bf16 GPU products need one";
  Bf16Products mode;
  Tensor x = test::randn({64, 96}, 9), w = test::randn({48, 96}, 10), b = test::randn({48}, 11);
  Tensor cpu = linear(x, w, b);
  Tensor gpu = linear(x.to(Device::cuda()), w.to(Device::cuda()), b.to(Device::cuda()));
  EXPECT_LT(test::rel_error(gpu, cpu),
            1e-4);  // same rounded operands; only the summation order differs
}

// Runs f on the CPU and the GPU under BF16 and compares the output and the inputs' gradients
// with the bf16 tolerance (2e-2, docs/method.md): cuDNN / cuBLASLt with bf16 operands vs the CPU's
// emulation of the same rounding.
void bf16_parity(const std::string& what,
                 const std::function<Tensor(const std::vector<Tensor>&)>& f,
                 const std::vector<Tensor>& inputs) {
  Bf16Products mode;
  std::vector<Tensor> ci, gi;
  for (const Tensor& t : inputs) {
    ci.push_back(test::requires_grad(t.clone()));
    gi.push_back(test::requires_grad(t.to(Device::cuda())));
  }
  Tensor co = f(ci), go = f(gi);
  Tensor r = test::randn(co.shape(), 99);
  sum(mul(co, r)).backward();
  sum(mul(go, r.to(Device::cuda()))).backward();
  Tensor gcpu = go.to(Device::cpu());
  EXPECT_LT(test::rel_error(gcpu, co), 2e-2) << what << " forward";
  for (float e : gcpu.to_vector()) ASSERT_TRUE(std::isfinite(e)) << what << ": non-finite output";
  for (size_t i = 0; i < inputs.size(); ++i)
    EXPECT_LT(test::rel_error(gi[i].grad().to(Device::cpu()), ci[i].grad()), 2e-2)
        << what << " grad of input " << i;
}

TEST(CudaPrecision, Conv2dBf16MatchesCpu) {
  if (!device_available(Device::cuda()))
    GTEST_SKIP() << "no CUDA device: the bf16 GPU convolutions need one";
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  Tensor b = test::randn({32}, 52);
  bf16_parity(
      "conv2d 3x3",
      [&](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], b.to(t[0].device()), p); },
      {test::randn({4, 14, 14, 16}, 50), test::randn({32, 3, 3, 16}, 51, 0.2f)});
  Conv2dParams s2;
  s2.stride_h = s2.stride_w = 2;
  s2.pad_h = s2.pad_w = 1;
  s2.groups = 4;
  bf16_parity("conv2d grouped stride 2",
              [&](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], Tensor(), s2); },
              {test::randn({3, 11, 9, 16}, 53), test::randn({8, 3, 3, 4}, 54, 0.3f)});
  bf16_parity(
      "conv2d 1x1",
      [&](const std::vector<Tensor>& t) { return conv2d(t[0], t[1], Tensor(), Conv2dParams{}); },
      {test::randn({2, 7, 7, 24}, 55), test::randn({40, 1, 1, 24}, 56, 0.2f)});
}

TEST(CudaPrecision, AttentionBf16MatchesCpu) {
  if (!device_available(Device::cuda()))
    GTEST_SKIP() << "no CUDA device: the bf16 GPU attention needs one";
  for (int64_t n : {50, 197}) {
    bf16_parity("attention N=" + std::to_string(n),
                [](const std::vector<Tensor>& t) {
                  return scaled_dot_product_attention(t[0], t[1], t[2], 0.125f);
                },
                {test::randn({2, 3, n, 64}, 60), test::randn({2, 3, n, 64}, 61),
                 test::randn({2, 3, n, 64}, 62)});
  }
}

TEST(CudaPrecision, AttentionPackedBf16MatchesCpu) {
  if (!device_available(Device::cuda()))
    GTEST_SKIP() << "no CUDA device: the bf16 GPU attention needs one";
  bf16_parity("self_attention_packed N=197",
              [](const std::vector<Tensor>& t) { return self_attention_packed(t[0], 3, 0.125f); },
              {test::randn({2, 197, 3 * 3 * 64}, 63)});
}

// Whole models in bf16 on the GPU against the f32 CPU model: logits within the bf16 tolerance.
TEST(CudaPrecision, ModelsBf16MatchF32Cpu) {
  if (!device_available(Device::cuda()))
    GTEST_SKIP() << "no CUDA device: the bf16 GPU models need one";
  for (const char* name : {"vit_fmnist_micro_distilled", "resnet_fmnist_small"}) {
    ModelOverrides o;
    o.seed = 5;
    auto m = create_model(name, o);
    m->eval();
    Tensor x = test::randn({8, 28, 28, 1}, 70);
    Tensor y32 = m->forward(x);
    m->to(Device::cuda());
    Tensor y16;
    {
      Bf16Products mode;
      y16 = m->forward(x.to(Device::cuda())).to(Device::cpu());
    }
    EXPECT_LT(test::rel_error(y16, y32), 2e-2) << name;
    EXPECT_GT(test::rel_error(y16, y32), 1e-6) << name << ": bf16 mode not on";
  }
}

TEST(Precision, ParseNamesTheValue) {
  EXPECT_EQ(parse_precision("bf16"), MatmulPrecision::BF16);
  test::expect_error([] { parse_precision("fp16"); }, {"fp16", "f32 or bf16"});
}

}  // namespace
}  // namespace mokd
