// The fused epilogue bias_gelu (engine/backend.h): gelu(x + bias) forward, and gx with the bias's
// column sums backward, each one pass. Its oracle is the unfused composition (Backend::bias_gelu:
// an add and a GELU; the GELU's backward and a reduction), equal bit for bit on the CPU in f32
// and in bf16 (the fused kernel rounds x + bias as the composition stores it); the op equals
// gelu(add(x, bias)) with its autograd bit for bit; finite differences; argument errors; the CUDA
// backend within a few f32 (bf16) ulps of the CPU, fused and composed, skipping without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/backend.h"
#include "engine/bf16.h"
#include "engine/ops.h"
#include "engine/precision.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

#ifdef MOKD_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace mokd {
namespace {

using test::requires_grad;

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::F32) {
  return test::randn(s, seed, 1.5f).to(dt);
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor h = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const uint8_t*>(h.raw_data());
  return {p, p + h.nbytes()};
}

// x's shape; the bias is its last dim. Odd sizes, one row, one column, and column blocks that do
// not divide evenly (the CPU sums 64 columns a block).
const Shape kShapes[] = {{1, 1}, {7, 3}, {3, 5, 17}, {130, 64}, {33, 200}, {2, 9, 300}};

TEST(BiasGelu, TheFusedCpuKernelEqualsTheCompositionBitForBit) {
  Backend& be = backend_for(Device::cpu());
  for (DType dt : {DType::F32, DType::BF16})
    for (const Shape& s : kShapes) {
      const std::string what = std::string(dtype_name(dt)) + " " + shape_str(s);
      const Tensor x = randn(s, 1, dt), b = randn({s.back()}, 2), g = randn(s, 3, dt);
      Tensor fused = Tensor::empty(s, dt), composed = Tensor::empty(s, dt);
      be.bias_gelu(x, b, fused);
      be.Backend::bias_gelu(x, b, composed);
      EXPECT_EQ(bytes_of(fused), bytes_of(composed)) << what << ": y";
      Tensor gx_f = Tensor::empty(s, dt), gx_c = Tensor::empty(s, dt);
      Tensor gb_f = Tensor::empty({s.back()}), gb_c = Tensor::empty({s.back()});
      be.bias_gelu_backward(g, x, b, gx_f, &gb_f);
      be.Backend::bias_gelu_backward(g, x, b, gx_c, &gb_c);
      EXPECT_EQ(bytes_of(gx_f), bytes_of(gx_c)) << what << ": gx";
      EXPECT_EQ(bytes_of(gb_f), bytes_of(gb_c)) << what << ": gbias";
      Tensor gx_only = Tensor::empty(s, dt);  // without the bias's gradient
      be.bias_gelu_backward(g, x, b, gx_only, nullptr);
      EXPECT_EQ(bytes_of(gx_only), bytes_of(gx_c)) << what << ": gx without gbias";
    }
}

// y = gelu(x + b) and both gradients through the op, fused or as gelu(add(x, b)).
struct Result {
  Tensor y, gx, gb;
};
Result run(bool fused, const Shape& s, DType dt, Device dev = Device::cpu()) {
  Tensor x = requires_grad(randn(s, 4, dt).to(dev));
  Tensor b = requires_grad(randn({s.back()}, 5).to(dev));
  Tensor r = randn(s, 6).to(dev);
  Result out;
  out.y = fused ? bias_gelu(x, b) : gelu(add(x, b));
  sum(mul(cast(out.y, DType::F32), r)).backward();
  out.gx = x.grad();
  out.gb = b.grad();
  return out;
}

TEST(BiasGelu, TheOpEqualsGeluOfAddWithItsGradientsBitForBit) {
  for (DType dt : {DType::F32, DType::BF16})
    for (const Shape& s : kShapes) {
      const std::string what = std::string(dtype_name(dt)) + " " + shape_str(s);
      const Result f = run(true, s, dt), c = run(false, s, dt);
      EXPECT_EQ(bytes_of(f.y), bytes_of(c.y)) << what << ": y";
      EXPECT_EQ(bytes_of(f.gx), bytes_of(c.gx)) << what << ": x's gradient";
      ASSERT_EQ(f.gb.dtype(), DType::F32) << what;
      EXPECT_EQ(bytes_of(f.gb), bytes_of(c.gb)) << what << ": bias's gradient";
    }
}

TEST(BiasGelu, FiniteDifferenceGradients) {
  test::gradcheck([](const std::vector<Tensor>& v) { return bias_gelu(v[0], v[1]); },
                  {requires_grad(randn({4, 3, 5}, 7)), requires_grad(randn({5}, 8))}, {},
                  "bias_gelu");
}

TEST(BiasGelu, LinearGeluEqualsGeluOfLinear) {
  // The product without its bias, then the fused pass: the same values to f32 rounding (the bias
  // joins after the product's rounding instead of inside the accumulator), the same gradients.
  Tensor x = requires_grad(randn({6, 11}, 9)), w = requires_grad(randn({13, 11}, 10));
  Tensor b = requires_grad(randn({13}, 11));
  Tensor y = linear_gelu(x, w, b);
  sum(y).backward();
  const Tensor gx = x.grad(), gw = w.grad(), gb = b.grad();
  x.zero_grad();
  w.zero_grad();
  b.zero_grad();
  Tensor ref = gelu(linear(x, w, b));
  sum(ref).backward();
  test::expect_close(y, ref, 1e-6, 1e-6, "linear_gelu");
  test::expect_close(gx, x.grad(), 1e-5, 1e-5, "x's gradient");
  test::expect_close(gw, w.grad(), 1e-5, 1e-5, "w's gradient");
  test::expect_close(gb, b.grad(), 1e-5, 1e-5, "b's gradient");
}

TEST(BiasGelu, RefusesBadArgumentsNamingThem) {
  Tensor x = randn({4, 8}, 12), b = randn({8}, 13);
  test::expect_error([&] { (void)bias_gelu(x, randn({5}, 1)); }, {"bias_gelu", "[8]"});
  test::expect_error([&] { (void)bias_gelu(x, Tensor()); }, {"bias_gelu", "undefined"});
  test::expect_error([&] { (void)bias_gelu(x, b.to(DType::BF16)); }, {"bias_gelu", "dtype"});
  test::expect_error(
      [&] {
        (void)bias_gelu(Tensor::zeros({4, 8}, DType::I64), b);
      },
      {"bias_gelu", "floating point"});
  Backend& be = backend_for(Device::cpu());
  Tensor y = Tensor::empty({4, 8});
  test::expect_error([&] { be.bias_gelu(x, b.to(DType::BF16), y); },
                     {"bias_gelu", "contiguous f32 vector"});
  Tensor y_bad = Tensor::empty({4, 7});
  test::expect_error([&] { be.bias_gelu(x, b, y_bad); }, {"bias_gelu", "shape"});
  Tensor gb_bad = Tensor::empty({7});
  test::expect_error([&] { be.bias_gelu_backward(x, x, b, y, &gb_bad); },
                     {"bias_gelu_backward", "grad_bias", "8 elements"});
  Tensor g16 = x.to(DType::BF16);
  test::expect_error([&] { be.bias_gelu_backward(g16, x, b, y, nullptr); },
                     {"bias_gelu_backward", "grad_y", "f32"});
}

// |a - b| within `ulps` of b's spacing (bf16: 8 significant bits, f32: 24) plus a tiny floor.
void expect_ulps(const Tensor& got, const Tensor& want, DType dt, float ulps,
                 const std::string& what) {
  const std::vector<float> g = got.to(Device::cpu()).to(DType::F32).to_vector();
  const std::vector<float> w = want.to(DType::F32).to_vector();
  ASSERT_EQ(g.size(), w.size()) << what;
  const int bits = dt == DType::BF16 ? 7 : 23;
  for (size_t i = 0; i < w.size(); ++i) {
    const float spacing = w[i] == 0.f ? 1e-30f : std::ldexp(1.f, std::ilogb(w[i]) - bits);
    ASSERT_LE(std::fabs(g[i] - w[i]), ulps * spacing + 1e-7f)
        << what << ": element " << i << " got " << g[i] << " want " << w[i];
  }
}

TEST(CudaBiasGelu, TheGpuMatchesTheCpuFusedAndComposed) {
  SKIP_WITHOUT_CUDA();
#ifdef MOKD_WITH_CUDA
  const bool was = cuda_fused_epilogues();
  Backend& cpu = backend_for(Device::cpu());
  Backend& gpu = backend_for(Device::cuda());
  for (bool fused_on : {true, false}) {
    cuda_set_fused_epilogues(fused_on);
    EXPECT_EQ(gpu.fuses_epilogues(), fused_on);
    for (DType dt : {DType::F32, DType::BF16})
      for (const Shape& s : kShapes) {
        const std::string what =
            std::string(fused_on ? "fused " : "composed ") + dtype_name(dt) + " " + shape_str(s);
        const Tensor x = randn(s, 14, dt), b = randn({s.back()}, 15), g = randn(s, 16, dt);
        Tensor y = Tensor::empty(s, dt), gx = Tensor::empty(s, dt), gb = Tensor::empty({s.back()});
        cpu.bias_gelu(x, b, y);
        cpu.bias_gelu_backward(g, x, b, gx, &gb);
        const Device d = Device::cuda();
        const Tensor dx = x.to(d), db = b.to(d), dg = g.to(d);
        Tensor dy = Tensor::empty(s, dt, d), dgx = Tensor::empty(s, dt, d);
        Tensor dgb = Tensor::empty({s.back()}, DType::F32, d);
        gpu.bias_gelu(dx, db, dy);
        gpu.bias_gelu_backward(dg, dx, db, dgx, &dgb);
        // erff/expf on the device against the host's erf/exp: a few f32 ulps, which a bf16
        // result can turn into one bf16 ulp.
        const float ulps = dt == DType::BF16 ? 1.f : 8.f;
        expect_ulps(dy, y, dt, ulps, what + ": y");
        expect_ulps(dgx, gx, dt, ulps, what + ": gx");
        // The bias's sums over up to 300 rows of such elements.
        test::expect_close(dgb.to(Device::cpu()), gb, 1e-4, 1e-4, what + ": gbias");
      }
    // Through the op, with autograd.
    const Result c = run(true, {3, 5, 17}, DType::F32);
    const Result gr = run(true, {3, 5, 17}, DType::F32, Device::cuda());
    test::expect_close(gr.y.to(Device::cpu()), c.y, 1e-5, 1e-6, "op y");
    test::expect_close(gr.gx.to(Device::cpu()), c.gx, 1e-5, 1e-6, "op gx");
    test::expect_close(gr.gb.to(Device::cpu()), c.gb, 1e-4, 1e-5, "op gbias");
  }
  cuda_set_fused_epilogues(was);
#endif
}

}  // namespace
}  // namespace mokd
