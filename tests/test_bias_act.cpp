// The fused epilogue bias_act (engine/backend.h): relu?(x + bias (+ residual)) in one pass. Its
// oracle is the unfused composition (Backend::bias_act: a bias add, a residual add, a ReLU), equal
// bit for bit in f32; in bf16 the fused kernel is the f32 math rounded once (computed here from
// the widened inputs) and the composition, which rounds after each pass, stays within one bf16
// ulp of it. The CUDA kernel must give the CPU's bits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "engine/backend.h"
#include "engine/bf16.h"
#include "engine/ops.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

#ifdef MOKD_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace mokd {
namespace {

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::F32) {
  Tensor t = Tensor::empty(s);
  Generator g(seed, Stream::Init);
  normal_(t, 0.f, 1.f, g);
  return t.to(dt);
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor h = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const uint8_t*>(h.raw_data());
  return {p, p + h.nbytes()};
}

// The spacing of bf16 values around a (8 significant bits).
float bf16_ulp(float a) {
  return a == 0.f ? std::ldexp(1.f, -126) : std::ldexp(1.f, std::ilogb(a) - 7);
}

struct Case {
  int64_t rows, c;
  bool residual, relu;
};
const Case kCases[] = {{1, 1, false, false},   {7, 3, true, true},     {64, 17, false, true},
                       {130, 64, true, false}, {300, 256, true, true}, {5, 1000, false, false}};

TEST(BiasAct, TheFusedCpuKernelEqualsTheCompositionInF32) {
  Backend& be = backend_for(Device::cpu());
  for (const Case& k : kCases) {
    const Tensor x = randn({k.rows, k.c}, 1), b = randn({k.c}, 2), r = randn({k.rows, k.c}, 3);
    Tensor fused = Tensor::empty(x.shape()), composed = Tensor::empty(x.shape());
    be.bias_act(x, b, k.residual ? &r : nullptr, k.relu, fused);
    be.Backend::bias_act(x, b, k.residual ? &r : nullptr, k.relu, composed);
    EXPECT_EQ(bytes_of(fused), bytes_of(composed)) << k.rows << "x" << k.c;
    // In place, y aliasing x.
    Tensor inplace = x.contiguous().to(DType::F64).to(DType::F32);
    be.bias_act(inplace, b, k.residual ? &r : nullptr, k.relu, inplace);
    EXPECT_EQ(bytes_of(inplace), bytes_of(fused));
    if (k.relu) {
      int64_t zeros = 0;
      for (float v : fused.to_vector()) zeros += v == 0.f;
      EXPECT_GT(zeros, 0) << "the ReLU clamps about half the values";
    }
  }
}

TEST(BiasAct, InBf16TheFusedKernelRoundsOnceAndTheCompositionIsWithinAnUlp) {
  Backend& be = backend_for(Device::cpu());
  for (const Case& k : kCases) {
    const Tensor x = randn({k.rows, k.c}, 4, DType::BF16), b = randn({k.c}, 5);
    const Tensor r = randn({k.rows, k.c}, 6, DType::BF16);
    Tensor fused = Tensor::empty(x.shape(), DType::BF16);
    Tensor composed = Tensor::empty(x.shape(), DType::BF16);
    be.bias_act(x, b, k.residual ? &r : nullptr, k.relu, fused);
    be.Backend::bias_act(x, b, k.residual ? &r : nullptr, k.relu, composed);
    const bf16* px = x.data<bf16>();
    const bf16* pr = r.data<bf16>();
    const bf16* pf = fused.data<bf16>();
    const bf16* pc = composed.data<bf16>();
    const std::vector<float> bias = b.to_vector();
    int64_t differ = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      float v = bf16_to_float(px[i]) + bias[static_cast<size_t>(i % k.c)];
      if (k.residual) v += bf16_to_float(pr[i]);
      if (k.relu) v = v > 0.f ? v : 0.f;
      ASSERT_EQ(pf[i].bits, float_to_bf16(v).bits) << "element " << i;
      // The composition rounds x + bias, then the sum with the residual: half an ulp of each.
      const float partial = bf16_to_float(px[i]) + bias[static_cast<size_t>(i % k.c)];
      const float tol = bf16_ulp(partial) + bf16_ulp(v);
      EXPECT_LE(std::fabs(bf16_to_float(pc[i]) - bf16_to_float(pf[i])), tol) << "element " << i;
      differ += pc[i].bits != pf[i].bits;
    }
    if (k.residual && x.numel() > 1000)
      EXPECT_GT(differ, 0) << "the composition's extra rounding shows on some elements";
  }
}

TEST(BiasAct, TheOpRefusesGradientsAndBadShapes) {
  Tensor x = randn({4, 8}, 7), b = randn({8}, 8);
  Tensor w = randn({8}, 9);
  w.set_requires_grad(true);
  test::expect_error([&] { (void)bias_act(x, w, Tensor(), true); }, {"inference only"});
  test::expect_error([&] { (void)bias_act(x, randn({5}, 1), Tensor(), true); },
                     {"bias_act", "[8]"});
  test::expect_error([&] { (void)bias_act(x, b, randn({4, 7}, 1), true); }, {"residual", "shape"});
  const Tensor y = bias_act(x, b, Tensor(), false);
  const std::vector<float> xv = x.to_vector(), bv = b.to_vector(), yv = y.to_vector();
  for (size_t i = 0; i < xv.size(); ++i) EXPECT_EQ(yv[i], xv[i] + bv[i % 8]);
}

TEST(CudaBiasAct, TheFusedKernelEqualsTheCpu) {
  SKIP_WITHOUT_CUDA();
#ifdef MOKD_WITH_CUDA
  const bool was = cuda_fused_epilogues();
  Backend& cpu = backend_for(Device::cpu());
  Backend& gpu = backend_for(Device::cuda());
  for (bool fused_on : {true, false}) {
    cuda_set_fused_epilogues(fused_on);
    for (DType dt : {DType::F32, DType::BF16}) {
      for (const Case& k : kCases) {
        const Tensor x = randn({k.rows, k.c}, 10, dt), b = randn({k.c}, 11);
        const Tensor r = randn({k.rows, k.c}, 12, dt);
        Tensor want = Tensor::empty(x.shape(), dt);
        if (fused_on)
          cpu.bias_act(x, b, k.residual ? &r : nullptr, k.relu, want);
        else
          cpu.Backend::bias_act(x, b, k.residual ? &r : nullptr, k.relu, want);
        const Tensor gx = x.to(Device::cuda()), gb = b.to(Device::cuda()),
                     gr = r.to(Device::cuda());
        Tensor got = Tensor::empty(x.shape(), dt, Device::cuda());
        gpu.bias_act(gx, gb, k.residual ? &gr : nullptr, k.relu, got);
        EXPECT_EQ(bytes_of(got), bytes_of(want))
            << (fused_on ? "fused " : "composed ") << dtype_name(dt) << " " << k.rows << "x" << k.c;
      }
    }
  }
  cuda_set_fused_epilogues(was);
#endif
}

}  // namespace
}  // namespace mokd
