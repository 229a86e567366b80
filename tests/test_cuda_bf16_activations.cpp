// CUDA backend against the CPU reference for bf16 activations (mixed precision): each activation
// kernel (unary and its backward, binary with a bf16 or f32 b, reduce_sum into f32 or bf16,
// softmax and log-softmax with their backwards, layer norm, batch norm, max and average pooling)
// called through the Backend interface on both devices with the same inputs, random f32 values
// rounded to bf16. Both compute in f32 from the same widened values and round once on store, so a
// bf16 output may differ only where the two f32 results (summed in another order) straddle a
// rounding boundary: one bf16 ulp. Per-row and per-channel statistics and f32 parameter gradients
// match to the f32 tolerance of the other CUDA parity tests (relative error < 1e-5), argmax
// exactly. gemm and gemm_bias with a bf16 c, and the random fills into bf16, are held to the f32
// CPU result rounded to bf16 (the definition of one rounding). The same kernels with f32 tensors
// must still match the CPU to 1e-5. Each test skips when no CUDA device is available; fresh
// device memory is NaN (tests/cuda_test_util.h), so an element a kernel forgets to write fails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::randn;
using test::rel_error;
using test::uniform;

constexpr double kF32Tol = 1e-5;  // the f32 CUDA-vs-CPU tolerance of tests/test_cuda_parity.cpp

Backend& cpu() { return backend_for(Device::cpu()); }
Backend& gpu() { return backend_for(Device::cuda()); }

// One operand on both devices, equal values.
struct Both {
  Tensor c, g;
};

Both both(const Tensor& cpu_value) { return {cpu_value.clone(), cpu_value.to(Device::cuda())}; }
Both empty_both(const Shape& s, DType dt) {
  return {Tensor::empty(s, dt, Device::cpu()), Tensor::empty(s, dt, Device::cuda())};
}
// An activation input: random normal values (scaled), rounded to dt.
Both act(const Shape& s, uint64_t seed, DType dt, float std = 1.f) {
  return both(randn(s, seed, std).to(dt));
}
// An activation input in [lo, hi), rounded to dt.
Both act_in(const Shape& s, uint64_t seed, DType dt, float lo, float hi) {
  return both(uniform(s, seed, lo, hi).to(dt));
}

std::vector<float> values(const Tensor& t) {
  return t.to(Device::cpu()).to(DType::F32).to_vector();
}

// One bf16 ulp at |v| (8 significant bits); the smallest normal's for zero and subnormals.
double bf16_ulp(double v) {
  int e = 0;
  std::frexp(std::max(std::fabs(v), 1.1754943508222875e-38), &e);  // v = m 2^e, m in [0.5, 1)
  return std::ldexp(1.0, e - 8);
}

// gpu matches the CPU's cpu: same shape and dtype, no NaN on the GPU where the CPU has none. bf16:
// each element within one bf16 ulp (at the larger magnitude of the two), plus 1e-5 of the largest
// |cpu| for results that cancel to near zero; f32: relative error < 1e-5.
void expect_act(const Tensor& g, const Tensor& c, const std::string& what) {
  ASSERT_TRUE(g.device().is_cuda()) << what;
  ASSERT_EQ(g.shape(), c.shape()) << what;
  ASSERT_EQ(g.dtype(), c.dtype()) << what;
  const std::vector<float> gv = values(g), cv = values(c);
  double scale = 0;
  for (float v : cv) scale = std::max(scale, std::fabs(double(v)));
  int bad = 0;
  double worst = 0;
  for (size_t i = 0; i < cv.size(); ++i) {
    if (std::isnan(cv[i]) || std::isnan(gv[i])) {
      if (std::isnan(cv[i]) != std::isnan(gv[i]) && bad++ < 5)
        ADD_FAILURE() << what << ": NaN on one device only at " << i << " (gpu " << gv[i]
                      << ", cpu " << cv[i] << ")";
      continue;
    }
    const double d = std::fabs(double(gv[i]) - cv[i]);
    if (g.dtype() == DType::BF16) {
      const double tol =
          bf16_ulp(std::max(std::fabs(double(gv[i])), std::fabs(double(cv[i])))) + kF32Tol * scale;
      worst = std::max(worst, d / tol);
      if (d > tol && bad++ < 5)
        ADD_FAILURE() << what << ": element " << i << " gpu " << gv[i] << " cpu " << cv[i]
                      << " differ by " << d << " > " << tol << " (one bf16 ulp)";
    }
  }
  if (g.dtype() != DType::BF16) {
    const double e = rel_error(g.to(Device::cpu()), c);
    EXPECT_LT(e, kF32Tol) << what << ": relative error " << e;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " elements off (worst " << worst << " ulp budgets)";
}
void expect_act(const Both& t, const std::string& what) { expect_act(t.g, t.c, what); }

// f32 statistics and parameter gradients: relative error < 1e-5, no NaN.
void expect_f32(const Both& t, const std::string& what) {
  ASSERT_EQ(t.g.dtype(), DType::F32) << what;
  const std::vector<float> gv = values(t.g);
  EXPECT_TRUE(std::none_of(gv.begin(), gv.end(), [](float v) { return std::isnan(v); }))
      << what << ": NaN on the GPU";
  const double e = rel_error(t.g.to(Device::cpu()), t.c);
  EXPECT_LT(e, kF32Tol) << what << ": relative error " << e;
}

// Runs one check; an exception (a kernel refusing its operands) fails this check only, so one GPU
// run reports every mismatch.
void check(const std::string& what, const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << " threw: " << e.what();
  }
}

std::string name(const char* kernel, DType dt) {
  return std::string(kernel) + " " + dtype_name(dt);
}

// ---- the kernel families, for activations of dtype dt ----

void check_unary(DType dt) {
  struct Case {
    UnaryOp op;
    float alpha;
    bool positive;  // log, sqrt, reciprocal: inputs in [0.5, 2)
  };
  const Case cases[] = {{UnaryOp::Neg, 0, false},         {UnaryOp::Exp, 0, false},
                        {UnaryOp::Log, 0, true},          {UnaryOp::Sqrt, 0, true},
                        {UnaryOp::Square, 0, false},      {UnaryOp::Abs, 0, false},
                        {UnaryOp::Relu, 0, false},        {UnaryOp::Gelu, 0, false},
                        {UnaryOp::Scale, 1.7f, false},    {UnaryOp::AddScalar, -0.3f, false},
                        {UnaryOp::SmoothL1, 0.5f, false}, {UnaryOp::Reciprocal, 0, true}};
  const Shape s{4, 33, 17};
  for (const Case& k : cases) {
    const std::string what = name(unary_name(k.op), dt);
    check(what, [&] {
      Both x = k.positive ? act_in(s, 1, dt, 0.5f, 2.f) : act(s, 1, dt);
      Both gout = act(s, 2, dt), y = empty_both(s, dt), gin = empty_both(s, dt);
      cpu().unary(k.op, x.c, y.c, k.alpha);
      gpu().unary(k.op, x.g, y.g, k.alpha);
      expect_act(y, what + " forward");
      cpu().unary_backward(k.op, x.c, gout.c, gin.c, k.alpha);
      gpu().unary_backward(k.op, x.g, gout.g, gin.g, k.alpha);
      expect_act(gin, what + " backward");
    });
  }
}

// b_dt: b's dtype (dt, or f32 beside a bf16 a). Contiguous operands, then a broadcast b.
void check_binary(DType dt, DType b_dt) {
  const std::string base = name("binary", dt) + " b " + dtype_name(b_dt);
  for (BinaryOp op : {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div}) {
    const std::string what = base + " op " + std::to_string(int(op));
    check(what, [&] {
      const Shape s{4, 5, 6};
      Both a = act(s, 3, dt);
      Both b = op == BinaryOp::Div ? act_in(s, 4, b_dt, 0.5f, 2.f) : act(s, 4, b_dt);
      Both out = empty_both(s, dt);
      cpu().binary(op, a.c, b.c, out.c);
      gpu().binary(op, a.g, b.g, out.g);
      expect_act(out, what + " contiguous");
      // b [5, 1] broadcast over [4, 5, 6] (stride 0 dims: the strided kernel).
      Both row = op == BinaryOp::Div ? act_in({5, 1}, 5, b_dt, 0.5f, 2.f) : act({5, 1}, 5, b_dt);
      Tensor bc = row.c.expand_view(s), bg = row.g.expand_view(s);
      Both out2 = empty_both(s, dt);
      cpu().binary(op, a.c, bc, out2.c);
      gpu().binary(op, a.g, bg, out2.g);
      expect_act(out2, what + " broadcast");
    });
  }
}

// Every reduce_sum pattern over x [6, 37, 9]: all, rows, columns, a middle dim (the generic
// kernel), nothing (size-1 dims only), into an out of out_dt.
void check_reduce_sum(DType dt, DType out_dt) {
  const std::string base = name("reduce_sum", dt) + " into " + dtype_name(out_dt);
  const Shape xs{6, 37, 9};
  const Shape outs[] = {{1, 1, 1}, {6, 37, 1}, {1, 37, 9}, {6, 1, 9}, {6, 37, 9}};
  for (const Shape& os : outs) {
    const std::string what = base + " out " + shape_str(os);
    check(what, [&] {
      Both x = act(xs, 6, dt), out = empty_both(os, out_dt);
      cpu().reduce_sum(x.c, out.c, 0.5f);
      gpu().reduce_sum(x.g, out.g, 0.5f);
      expect_act(out, what);
    });
  }
}

void check_softmax(DType dt) {
  for (bool log : {false, true})
    for (const Shape& s : {Shape{7, 1001}, Shape{3, 10}}) {
      const std::string what = name(log ? "log_softmax" : "softmax", dt) + " " + shape_str(s);
      check(what, [&] {
        Both x = act(s, 7, dt, 3.f), y = empty_both(s, dt);
        cpu().softmax(x.c, y.c, log);
        gpu().softmax(x.g, y.g, log);
        expect_act(y, what + " forward");
        // The backward of the CPU's forward output on both devices.
        Both yc = both(y.c), gy = act(s, 8, dt), gx = empty_both(s, dt);
        cpu().softmax_backward(yc.c, gy.c, gx.c, log);
        gpu().softmax_backward(yc.g, gy.g, gx.g, log);
        expect_act(gx, what + " backward");
      });
    }
}

void check_layer_norm(DType dt) {
  for (bool affine : {true, false}) {
    const std::string what = name("layer_norm", dt) + (affine ? " affine" : " plain");
    check(what, [&] {
      const int64_t rows = 13, d = 384;
      Both x = act({rows, d}, 9, dt, 2.f), y = empty_both({rows, d}, dt);
      Both w = both(randn({d}, 10)), b = both(randn({d}, 11));
      Both mean = empty_both({rows}, DType::F32), rstd = empty_both({rows}, DType::F32);
      cpu().layer_norm(x.c, affine ? &w.c : nullptr, affine ? &b.c : nullptr, 1e-5f, y.c, mean.c,
                       rstd.c);
      gpu().layer_norm(x.g, affine ? &w.g : nullptr, affine ? &b.g : nullptr, 1e-5f, y.g, mean.g,
                       rstd.g);
      expect_act(y, what + " y");
      expect_f32(mean, what + " mean");
      expect_f32(rstd, what + " rstd");
      // Backward from the CPU's statistics on both devices.
      Both ms = both(mean.c), rs = both(rstd.c), gy = act({rows, d}, 12, dt);
      Both gx = empty_both({rows, d}, dt), gw = empty_both({d}, DType::F32),
           gb = empty_both({d}, DType::F32);
      cpu().layer_norm_backward(gy.c, x.c, affine ? &w.c : nullptr, ms.c, rs.c, gx.c,
                                affine ? &gw.c : nullptr, affine ? &gb.c : nullptr);
      gpu().layer_norm_backward(gy.g, x.g, affine ? &w.g : nullptr, ms.g, rs.g, gx.g,
                                affine ? &gw.g : nullptr, affine ? &gb.g : nullptr);
      expect_act(gx, what + " grad_x");
      if (affine) {
        expect_f32(gw, what + " grad_weight");
        expect_f32(gb, what + " grad_bias");
      }
    });
  }
}

void check_batch_norm(DType dt) {
  const std::string what = name("batch_norm", dt);
  check(what, [&] {
    const Shape xs{2, 5, 5, 16};
    const int64_t C = 16;
    Both x = act(xs, 13, dt, 2.f), y = empty_both(xs, dt);
    Both w = both(randn({C}, 14)), b = both(randn({C}, 15));
    Both rm = both(randn({C}, 16, 0.1f)), rv = both(uniform({C}, 17, 0.5f, 2.f));
    Both sm = empty_both({C}, DType::F32), si = empty_both({C}, DType::F32);
    cpu().batch_norm_train(x.c, w.c, b.c, rm.c, rv.c, 0.1f, 1e-5f, y.c, sm.c, si.c);
    gpu().batch_norm_train(x.g, w.g, b.g, rm.g, rv.g, 0.1f, 1e-5f, y.g, sm.g, si.g);
    expect_act(y, what + " train y");
    expect_f32(sm, what + " save_mean");
    expect_f32(si, what + " save_invstd");
    expect_f32(rm, what + " running_mean");
    expect_f32(rv, what + " running_var");

    Both ye = empty_both(xs, dt), rmc = both(rm.c), rvc = both(rv.c);
    cpu().batch_norm_eval(x.c, w.c, b.c, rmc.c, rvc.c, 1e-5f, ye.c);
    gpu().batch_norm_eval(x.g, w.g, b.g, rmc.g, rvc.g, 1e-5f, ye.g);
    expect_act(ye, what + " eval y");

    for (bool training : {true, false}) {
      const std::string bw = what + (training ? " backward (batch stats)" : " backward (running)");
      // Any f32 statistics do for the parity: the batch's, or the running mean with them.
      Both mean = training ? both(sm.c) : both(rmc.c);
      Both invstd = both(si.c);
      Both gy = act(xs, 18, dt), gx = empty_both(xs, dt);
      Both gw = empty_both({C}, DType::F32), gb = empty_both({C}, DType::F32);
      cpu().batch_norm_backward(gy.c, x.c, w.c, mean.c, invstd.c, training, gx.c, gw.c, gb.c);
      gpu().batch_norm_backward(gy.g, x.g, w.g, mean.g, invstd.g, training, gx.g, gw.g, gb.g);
      expect_act(gx, bw + " grad_x");
      expect_f32(gw, bw + " grad_weight");
      expect_f32(gb, bw + " grad_bias");
    }
  });
}

void check_pool(DType dt) {
  Pool2dParams p;
  p.kernel_h = p.kernel_w = 3;
  p.stride_h = p.stride_w = 2;
  p.pad_h = p.pad_w = 1;  // overlapping, padded windows
  const Shape xs{2, 9, 7, 5}, ys{2, 5, 4, 5};
  const std::string mp = name("max_pool2d", dt);
  check(mp, [&] {
    Both x = act(xs, 19, dt), y = empty_both(ys, dt), arg = empty_both(ys, DType::I64);
    cpu().max_pool2d(x.c, p, y.c, arg.c);
    gpu().max_pool2d(x.g, p, y.g, arg.g);
    expect_act(y, mp + " y");
    EXPECT_EQ(arg.g.to(Device::cpu()).to_vector_i64(), arg.c.to_vector_i64()) << mp << " argmax";
    Both argc = both(arg.c), gy = act(ys, 20, dt), gx = empty_both(xs, dt);
    cpu().max_pool2d_backward(gy.c, argc.c, gx.c);
    gpu().max_pool2d_backward(gy.g, argc.g, gx.g);
    expect_act(gx, mp + " backward");
  });
  for (bool include_pad : {true, false}) {
    p.count_include_pad = include_pad;
    const std::string ap = name("avg_pool2d", dt) + (include_pad ? " count pad" : " skip pad");
    check(ap, [&] {
      Both x = act(xs, 21, dt), y = empty_both(ys, dt);
      cpu().avg_pool2d(x.c, p, y.c);
      gpu().avg_pool2d(x.g, p, y.g);
      expect_act(y, ap + " y");
      Both gy = act(ys, 22, dt), gx = empty_both(xs, dt);
      cpu().avg_pool2d_backward(gy.c, p, gx.c);
      gpu().avg_pool2d_backward(gy.g, p, gx.g);
      expect_act(gx, ap + " backward");
    });
  }
}

void check_all(DType dt) {
  check_unary(dt);
  check_binary(dt, dt);
  if (dt == DType::BF16) check_binary(dt, DType::F32);
  check_reduce_sum(dt, dt);
  if (dt == DType::BF16) check_reduce_sum(dt, DType::F32);
  check_softmax(dt);
  check_layer_norm(dt);
  check_batch_norm(dt);
  check_pool(dt);
}

TEST(CudaBf16Activations, Elementwise) {
  SKIP_WITHOUT_CUDA();
  check_unary(DType::BF16);
  check_binary(DType::BF16, DType::BF16);
  check_binary(DType::BF16, DType::F32);
}

TEST(CudaBf16Activations, ReduceSum) {
  SKIP_WITHOUT_CUDA();
  check_reduce_sum(DType::BF16, DType::BF16);
  check_reduce_sum(DType::BF16, DType::F32);
}

TEST(CudaBf16Activations, Softmax) {
  SKIP_WITHOUT_CUDA();
  check_softmax(DType::BF16);
}

TEST(CudaBf16Activations, LayerNorm) {
  SKIP_WITHOUT_CUDA();
  check_layer_norm(DType::BF16);
}

TEST(CudaBf16Activations, BatchNorm) {
  SKIP_WITHOUT_CUDA();
  check_batch_norm(DType::BF16);
}

TEST(CudaBf16Activations, Pooling) {
  SKIP_WITHOUT_CUDA();
  check_pool(DType::BF16);
}

// The f32 kernels are unchanged by the bf16 instantiations: every family above with f32 tensors
// still matches the CPU.
TEST(CudaBf16Activations, F32Unchanged) {
  SKIP_WITHOUT_CUDA();
  check_all(DType::F32);
}

// gemm and gemm_bias into a bf16 c (bf16 a and b): the f32 product (plus the widened bf16 bias)
// rounded once, i.e. the CPU's f32 result converted to bf16.
TEST(CudaBf16Activations, GemmBf16Out) {
  SKIP_WITHOUT_CUDA();
  const int64_t M = 37, N = 48, K = 100;
  const Tensor a = randn({M, K}, 23).to(DType::BF16), b = randn({N, K}, 24).to(DType::BF16);
  const Tensor bias = randn({N}, 25).to(DType::BF16);  // a bf16 c takes a bf16 bias
  check("gemm bf16 c", [&] {
    Tensor ref = Tensor::empty({M, N}, DType::F32, Device::cpu());
    cpu().gemm(a, b, ref, false, true, 1.f, 0.f);
    Tensor c = Tensor::empty({M, N}, DType::BF16, Device::cuda());
    gpu().gemm(a.to(Device::cuda()), b.to(Device::cuda()), c, false, true, 1.f, 0.f);
    expect_act(c, ref.to(DType::BF16), "gemm bf16 c");
  });
  check("gemm_bias bf16 c", [&] {
    Tensor ref = Tensor::empty({M, N}, DType::F32, Device::cpu());
    cpu().gemm_bias(a, b, bias.to(DType::F32), ref);  // the f32 sum of the same values
    Tensor c = Tensor::empty({M, N}, DType::BF16, Device::cuda());
    gpu().gemm_bias(a.to(Device::cuda()), b.to(Device::cuda()), bias.to(Device::cuda()), c);
    expect_act(c, ref.to(DType::BF16), "gemm_bias bf16 c");
  });
  // The sum rounds once: the product 2^-8 + 2^-16 rounded on its own gives 2^-8 (a tie, to
  // even), and 1 + 2^-8 rounds to 1 (a tie again); 1 + 2^-8 + 2^-16 rounds up to 1 + 2^-7.
  check("gemm_bias bf16 c, one rounding", [&] {
    const Tensor row = Tensor::from_vector({1.f / 16, 1.f / 256}, {1, 2});
    const Tensor small_a = row.expand_view({4, 2}).contiguous().to(DType::BF16);
    const Tensor small_b = row.expand_view({3, 2}).contiguous().to(DType::BF16);
    const Tensor fine = Tensor::full({3}, 1.0, DType::BF16);
    Tensor ref = Tensor::empty({4, 3}, DType::F32, Device::cpu());
    cpu().gemm_bias(small_a, small_b, fine.to(DType::F32), ref);
    Tensor c = Tensor::empty({4, 3}, DType::BF16, Device::cuda());
    gpu().gemm_bias(small_a.to(Device::cuda()), small_b.to(Device::cuda()), fine.to(Device::cuda()),
                    c);
    EXPECT_EQ(values(c), std::vector<float>(12, 1.f + 1.f / 128));
    EXPECT_EQ(values(c), values(ref.to(DType::BF16)));
  });
}

// Random fills into bf16: element i is the f32 value of (key, i) rounded once.
TEST(CudaBf16Activations, RandomFills) {
  SKIP_WITHOUT_CUDA();
  const Shape s{1000};
  const RngKey key{1234, 77};
  auto fill_pair = [&](const char* what, const std::function<void(Backend&, Tensor&)>& f) {
    check(what, [&] {
      Tensor ref = Tensor::empty(s, DType::F32, Device::cpu());
      f(cpu(), ref);
      Tensor g = Tensor::empty(s, DType::BF16, Device::cuda());
      f(gpu(), g);
      expect_act(g, ref.to(DType::BF16), what);
    });
  };
  fill_pair("fill_uniform bf16",
            [&](Backend& be, Tensor& t) { be.fill_uniform(t, -2.f, 3.f, key); });
  fill_pair("fill_normal bf16", [&](Backend& be, Tensor& t) { be.fill_normal(t, 0.5f, 2.f, key); });
  fill_pair("bernoulli_scaled bf16",
            [&](Backend& be, Tensor& t) { be.bernoulli_scaled(t, 0.7f, key); });
}

}  // namespace
}  // namespace mokd
