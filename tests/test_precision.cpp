// MatmulPrecision::BF16: matmul/linear round their operands to bf16 and accumulate in f32; the
// CPU emulates it exactly, so it equals f32 products of explicitly rounded tensors.
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
  EXPECT_EQ(y.dtype(), DType::F32);
  // Expected: f32 products of the rounded operands; the incoming gradient is rounded for the
  // products too, the bias gradient sums it unrounded.
  Tensor xr = rounded(x.detach()), wr = rounded(w.detach()), rr = rounded(r);
  test::expect_close(y, linear(xr, wr, b.detach()), 1e-6, 1e-6, "forward");
  test::expect_close(x.grad(), matmul(rr, wr), 1e-6, 1e-6, "grad x");
  test::expect_close(w.grad(), sum(matmul(transpose(rr, 1, 2), xr), {0}), 1e-5, 1e-5, "grad w");
  test::expect_close(b.grad(), sum(r, {0, 1}), 1e-6, 1e-6, "grad b");
  // And it differs from f32 math: the mode is really on.
  EXPECT_GT(test::rel_error(y, linear(x.detach(), w.detach(), b.detach())), 1e-5);
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
  test::expect_close(y, matmul(ar, cr), 1e-6, 1e-6, "forward");
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
  double err = test::rel_error(y16, y32);
  EXPECT_LT(err, 2e-2);   // the bf16 tolerance
  EXPECT_GT(err, 1e-6);   // and not simply f32
}

// The GPU's bf16 products (cuBLASLt, f32 accumulation) against the CPU's emulation.
TEST(CudaPrecision, LinearBf16MatchesCpu) {
  if (!device_available(Device::cuda())) GTEST_SKIP() << "no CUDA device: the bf16 GPU products need one";
  Bf16Products mode;
  Tensor x = test::randn({64, 96}, 9), w = test::randn({48, 96}, 10), b = test::randn({48}, 11);
  Tensor cpu = linear(x, w, b);
  Tensor gpu = linear(x.to(Device::cuda()), w.to(Device::cuda()), b.to(Device::cuda()));
  EXPECT_LT(test::rel_error(gpu, cpu), 1e-4);  // same rounded operands; only the summation order differs
}

TEST(Precision, ParseNamesTheValue) {
  EXPECT_EQ(parse_precision("bf16"), MatmulPrecision::BF16);
  test::expect_error([] { parse_precision("fp16"); }, {"fp16", "f32 or bf16"});
}

}  // namespace
}  // namespace mokd
