// batch_norm2d_relu (engine/ops.h): relu(batch_norm2d(x) (+ residual)) as one op. Its oracle is
// that composition (batch_norm2d, add, relu): outputs, running statistics and every gradient bit
// for bit, in training and eval, f32 and bf16; finite-difference gradients; the memory a step
// keeps for backward is one activation less; the CUDA backend gives the CPU's values.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "engine/ops.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::gradcheck;
using test::randn;
using test::requires_grad;
using Inputs = std::vector<Tensor>;

std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor h = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const uint8_t*>(h.raw_data());
  return {p, p + h.nbytes()};
}

struct Result {
  Tensor y, rm, rv, gx, gw, gb, gr;
};

// One forward and backward (loss = sum(y * r)), fused or composed.
Result run(bool fused, bool training, bool with_residual, DType dt, Device dev = Device::cpu(),
           bool f32_residual = false) {
  const Shape s = {3, 5, 4, 6};
  Tensor x = requires_grad(randn(s, 31, 1.5f).to(dt).to(dev));
  Tensor w = requires_grad(test::uniform({6}, 32, 0.5f, 1.5f).to(dev));
  Tensor b = requires_grad(randn({6}, 33).to(dev));
  Tensor res = requires_grad(randn(s, 34).to(f32_residual ? DType::F32 : dt).to(dev));
  Tensor r = randn(s, 35).to(dev);
  Result out;
  out.rm = randn({6}, 36).to(dev);
  out.rv = test::uniform({6}, 37, 0.5f, 2.f).to(dev);
  Tensor none;
  if (fused) {
    out.y = batch_norm2d_relu(x, w, b, out.rm, out.rv, training, 0.1f, 1e-5f,
                              with_residual ? res : none);
  } else {
    Tensor z = batch_norm2d(x, w, b, out.rm, out.rv, training, 0.1f, 1e-5f);
    out.y = relu(with_residual ? add(z, res) : z);
  }
  sum(mul(cast(out.y, DType::F32), r)).backward();
  out.gx = x.grad();
  out.gw = w.grad();
  out.gb = b.grad();
  out.gr = with_residual ? res.grad() : Tensor();
  return out;
}

void expect_same(const Result& a, const Result& b, const std::string& what) {
  EXPECT_EQ(bytes_of(a.y), bytes_of(b.y)) << what << ": y";
  EXPECT_EQ(bytes_of(a.rm), bytes_of(b.rm)) << what << ": running_mean";
  EXPECT_EQ(bytes_of(a.rv), bytes_of(b.rv)) << what << ": running_var";
  EXPECT_EQ(bytes_of(a.gx), bytes_of(b.gx)) << what << ": x's gradient";
  EXPECT_EQ(bytes_of(a.gw), bytes_of(b.gw)) << what << ": weight's gradient";
  EXPECT_EQ(bytes_of(a.gb), bytes_of(b.gb)) << what << ": bias's gradient";
  ASSERT_EQ(a.gr.defined(), b.gr.defined()) << what;
  if (a.gr.defined()) EXPECT_EQ(bytes_of(a.gr), bytes_of(b.gr)) << what << ": residual's gradient";
}

TEST(BatchNormRelu, EqualsTheCompositionBitForBit) {
  for (DType dt : {DType::F32, DType::BF16})
    for (bool training : {true, false})
      for (bool res : {false, true}) {
        const std::string what = std::string(dtype_name(dt)) + (training ? " train" : " eval") +
                                 (res ? " + residual" : "");
        const Result f = run(true, training, res, dt), c = run(false, training, res, dt);
        expect_same(f, c, what);
        int64_t zeros = 0;
        for (float v : f.y.to(DType::F32).to_vector()) zeros += v == 0.f;
        EXPECT_GT(zeros, 0) << what << ": the ReLU clamps some values";
      }
}

TEST(BatchNormRelu, AnF32ResidualOfABf16ActivationIsAddedAsTheCompositionAddsIt) {
  for (bool training : {true, false}) {
    const Result f = run(true, training, true, DType::BF16, Device::cpu(), true);
    const Result c = run(false, training, true, DType::BF16, Device::cpu(), true);
    expect_same(f, c, training ? "bf16 + f32 residual, train" : "bf16 + f32 residual, eval");
    EXPECT_EQ(f.gr.dtype(), DType::F32);
  }
}

TEST(BatchNormRelu, FiniteDifferenceGradients) {
  Tensor x = requires_grad(randn({2, 3, 5, 3}, 40, 1.5f));
  Tensor w = requires_grad(test::uniform({3}, 41, 0.5f, 1.5f));
  Tensor b = requires_grad(randn({3}, 42));
  Tensor res = requires_grad(randn({2, 3, 5, 3}, 43));
  gradcheck(
      [](const Inputs& v) {
        Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
        return batch_norm2d_relu(v[0], v[1], v[2], rm, rv, true, 0.1f, 1e-5f, v[3]);
      },
      {x, w, b, res}, {}, "batch_norm2d_relu train + residual");
  Tensor rm = randn({3}, 44), rv = test::uniform({3}, 45, 0.5f, 2.f);
  gradcheck(
      [&](const Inputs& v) {
        return batch_norm2d_relu(v[0], v[1], v[2], rm, rv, false, 0.1f, 1e-5f);
      },
      {x, w, b}, {}, "batch_norm2d_relu eval");
}

// Bytes the tape holds after the forward (the output dropped), for a chain of `n` uses.
size_t held_after_forward(bool fused) {
  Allocator& a = cpu_allocator();
  const Shape s = {4, 8, 8, 16};
  Tensor x = requires_grad(randn(s, 50));
  Tensor w = requires_grad(test::uniform({16}, 51, 0.5f, 1.5f)), b = requires_grad(randn({16}, 52));
  Tensor rm = Tensor::zeros({16}), rv = Tensor::ones({16});
  const size_t before = a.bytes_in_use();
  Tensor y = x;
  for (int i = 0; i < 4; ++i)
    y = fused ? batch_norm2d_relu(y, w, b, rm, rv, true)
              : relu(batch_norm2d(y, w, b, rm, rv, true));
  Tensor loss = sum(y);
  y = Tensor();
  const size_t held = a.bytes_in_use() - before;
  loss.backward();
  return held;
}

TEST(BatchNormRelu, KeepsOneActivationFewerForBackward) {
  const size_t activation = 4 * 8 * 8 * 16 * sizeof(float);
  const size_t composed = held_after_forward(false), fused = held_after_forward(true);
  // Composed, the tape keeps each batch norm's output (the ReLU's input) and each ReLU's output
  // (the next batch norm's input): 7 activations; fused, each op's output: 4.
  EXPECT_GE(composed, fused + 3 * activation)
      << "composed " << composed << " bytes, fused " << fused << " bytes";
}

TEST(CudaBatchNormRelu, TheGpuGivesTheCpuValues) {
  SKIP_WITHOUT_CUDA();
  for (bool training : {true, false})
    for (bool res : {false, true}) {
      const Result c = run(true, training, res, DType::F32);
      const Result g = run(true, training, res, DType::F32, Device::cuda());
      const Result gc = run(false, training, res, DType::F32, Device::cuda());
      expect_same(g, gc, "cuda fused against cuda composed");
      for (auto [a, b] : {std::pair{&c.y, &g.y}, std::pair{&c.gx, &g.gx}, std::pair{&c.gw, &g.gw},
                          std::pair{&c.gb, &g.gb}, std::pair{&c.gr, &g.gr}}) {
        if (!a->defined()) continue;
        const std::vector<float> va = a->to_vector(), vb = b->to(Device::cpu()).to_vector();
        ASSERT_EQ(va.size(), vb.size());
        for (size_t i = 0; i < va.size(); ++i)
          EXPECT_NEAR(vb[i], va[i], 1e-4 * std::max(1.f, std::fabs(va[i])));
      }
    }
}

}  // namespace
}  // namespace mokd
