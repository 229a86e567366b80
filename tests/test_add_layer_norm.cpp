// add_layer_norm (engine/ops.h): s = x + residual and n = layer_norm(s) as one op, both outputs
// with gradients. Its oracle is the composition add then layer_norm: on the CPU the kernels
// (Backend::add_layer_norm(_backward), the unfused default) and the op with its autograd equal it
// bit for bit in f32 and bf16, whichever of s and n carries a gradient; finite differences;
// argument errors; the CUDA backend within f32 (bf16) rounding of the CPU, fused and composed,
// skipping without a GPU.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "engine/backend.h"
#include "engine/ops.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

#ifdef MOKD_WITH_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace mokd {
namespace {

using test::requires_grad;

Tensor randn(const Shape& s, uint64_t seed, DType dt = DType::F32) {
  return test::randn(s, seed).to(dt);
}

std::vector<uint8_t> bytes_of(const Tensor& t) {
  Tensor h = t.to(Device::cpu()).contiguous();
  const auto* p = static_cast<const uint8_t*>(h.raw_data());
  return {p, p + h.nbytes()};
}

// x's shape; the norm runs over the last dim (odd sizes; more columns than one 64-column block).
const Shape kShapes[] = {{1, 1}, {5, 3}, {2, 7, 13}, {64, 192}, {9, 130}, {2, 3, 301}};

TEST(AddLayerNorm, TheFusedCpuKernelsEqualTheCompositionBitForBit) {
  Backend& be = backend_for(Device::cpu());
  for (DType dt : {DType::F32, DType::BF16})
    for (const Shape& s : kShapes)
      for (bool affine : {true, false}) {
        const std::string what =
            std::string(dtype_name(dt)) + " " + shape_str(s) + (affine ? " affine" : "");
        const int64_t d = s.back(), rows = Tensor::empty(s).numel() / d;
        const Tensor x = randn(s, 1, dt), r = randn(s, 2, dt);
        const Tensor w = test::uniform({d}, 3, 0.5f, 1.5f), b = randn({d}, 4);
        const Tensor* pw = affine ? &w : nullptr;
        const Tensor* pb = affine ? &b : nullptr;
        Tensor sf = Tensor::empty(s, dt), nf = Tensor::empty(s, dt), mf = Tensor::empty({rows}),
               rf = Tensor::empty({rows});
        Tensor sc = Tensor::empty(s, dt), nc = Tensor::empty(s, dt), mc = Tensor::empty({rows}),
               rc = Tensor::empty({rows});
        be.add_layer_norm(x, r, pw, pb, 1e-6f, sf, nf, mf, rf);
        be.Backend::add_layer_norm(x, r, pw, pb, 1e-6f, sc, nc, mc, rc);
        EXPECT_EQ(bytes_of(sf), bytes_of(sc)) << what << ": s";
        EXPECT_EQ(bytes_of(nf), bytes_of(nc)) << what << ": n";
        EXPECT_EQ(bytes_of(mf), bytes_of(mc)) << what << ": mean";
        EXPECT_EQ(bytes_of(rf), bytes_of(rc)) << what << ": rstd";
        const Tensor gn = randn(s, 5, dt), gs = randn(s, 6, dt);
        for (bool with_gs : {true, false}) {
          Tensor gxf = Tensor::empty(s, dt), gwf = Tensor::empty({d}), gbf = Tensor::empty({d});
          Tensor gxc = Tensor::empty(s, dt), gwc = Tensor::empty({d}), gbc = Tensor::empty({d});
          be.add_layer_norm_backward(gn, with_gs ? &gs : nullptr, sc, pw, mc, rc, gxf,
                                     affine ? &gwf : nullptr, affine ? &gbf : nullptr);
          be.Backend::add_layer_norm_backward(gn, with_gs ? &gs : nullptr, sc, pw, mc, rc, gxc,
                                              affine ? &gwc : nullptr, affine ? &gbc : nullptr);
          const std::string w2 = what + (with_gs ? " with gs" : "");
          EXPECT_EQ(bytes_of(gxf), bytes_of(gxc)) << w2 << ": gx";
          if (affine) {
            EXPECT_EQ(bytes_of(gwf), bytes_of(gwc)) << w2 << ": gw";
            EXPECT_EQ(bytes_of(gbf), bytes_of(gbc)) << w2 << ": gb";
          }
        }
      }
}

struct Result {
  Tensor s, n, gx, gr, gw, gb;
};

// s and n of x + residual, loss = sum(s * p) + sum(n * q) (use_s / use_n choose the terms),
// through the op or as add then layer_norm.
Result run(bool fused, const Shape& shape, DType dt, bool use_s, bool use_n,
           Device dev = Device::cpu()) {
  const int64_t d = shape.back();
  Tensor x = requires_grad(randn(shape, 7, dt).to(dev));
  Tensor res = requires_grad(randn(shape, 8, dt).to(dev));
  Tensor w = requires_grad(test::uniform({d}, 9, 0.5f, 1.5f).to(dev));
  Tensor b = requires_grad(randn({d}, 10).to(dev));
  const Tensor p = randn(shape, 11).to(dev), q = randn(shape, 12).to(dev);
  Result out;
  if (fused) {
    AddLayerNorm a = add_layer_norm(x, res, w, b, 1e-6f);
    out.s = a.s;
    out.n = a.n;
  } else {
    out.s = add(x, res);
    out.n = layer_norm(out.s, w, b, 1e-6f);
  }
  Tensor ls = sum(mul(cast(out.s, DType::F32), p)), ln = sum(mul(cast(out.n, DType::F32), q));
  (use_s && use_n ? add(ls, ln) : use_s ? ls : ln).backward();
  out.gx = x.grad();
  out.gr = res.grad();
  out.gw = w.grad();
  out.gb = b.grad();
  return out;
}

void expect_same(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.defined(), b.defined()) << what;
  if (a.defined()) EXPECT_EQ(bytes_of(a), bytes_of(b)) << what;
}

TEST(AddLayerNorm, TheOpEqualsAddThenLayerNormWithItsGradientsBitForBit) {
  for (DType dt : {DType::F32, DType::BF16})
    for (const Shape& s : kShapes)
      for (auto [use_s, use_n] : {std::pair{true, true}, {false, true}, {true, false}}) {
        const std::string what = std::string(dtype_name(dt)) + " " + shape_str(s) +
                                 (use_s ? " s" : "") + (use_n ? " n" : "");
        const Result f = run(true, s, dt, use_s, use_n), c = run(false, s, dt, use_s, use_n);
        expect_same(f.s, c.s, what + ": s");
        expect_same(f.n, c.n, what + ": n");
        expect_same(f.gx, c.gx, what + ": x's gradient");
        expect_same(f.gr, c.gr, what + ": residual's gradient");
        expect_same(f.gw, c.gw, what + ": weight's gradient");
        expect_same(f.gb, c.gb, what + ": bias's gradient");
      }
}

TEST(AddLayerNorm, ARetainedGraphGivesTheSameGradientsTwice) {
  Tensor x = requires_grad(randn({4, 6}, 13)), r = requires_grad(randn({4, 6}, 14));
  Tensor w = requires_grad(test::uniform({6}, 15, 0.5f, 1.5f)), b = requires_grad(randn({6}, 16));
  AddLayerNorm a = add_layer_norm(x, r, w, b);
  Tensor loss = add(sum(mul(a.n, randn({4, 6}, 17))), sum(mul(a.s, a.s)));
  loss.backward(true);
  const std::vector<float> gx1 = x.grad().to_vector(), gw1 = w.grad().to_vector();
  x.zero_grad();
  w.zero_grad();
  loss.backward();
  EXPECT_EQ(x.grad().to_vector(), gx1);
  EXPECT_EQ(w.grad().to_vector(), gw1);
}

TEST(AddLayerNorm, FiniteDifferenceGradients) {
  const Tensor q = randn({3, 4, 7}, 18);
  test::gradcheck(
      [&](const std::vector<Tensor>& v) {
        AddLayerNorm a = add_layer_norm(v[0], v[1], v[2], v[3], 1e-5f);
        return add(a.s, mul(a.n, q));  // both outputs reach the loss
      },
      {requires_grad(randn({3, 4, 7}, 19)), requires_grad(randn({3, 4, 7}, 20)),
       requires_grad(test::uniform({7}, 21, 0.5f, 1.5f)), requires_grad(randn({7}, 22))},
      {}, "add_layer_norm");
}

TEST(AddLayerNorm, RefusesBadArgumentsNamingThem) {
  Tensor x = randn({4, 8}, 23), r = randn({4, 8}, 24), w = randn({8}, 25), b = randn({8}, 26);
  test::expect_error(
      [&] {
        (void)add_layer_norm(x, randn({4, 7}, 1), w, b);
      },
      {"add_layer_norm", "residual", "shape"});
  test::expect_error([&] { (void)add_layer_norm(x, r, randn({5}, 1), b); },
                     {"add_layer_norm", "weight", "[8]"});
  test::expect_error([&] { (void)add_layer_norm(x, r, w, b, -1.f); }, {"add_layer_norm", "eps"});
  test::expect_error([&] { (void)add_layer_norm(x, Tensor(), w, b); },
                     {"add_layer_norm", "residual", "undefined"});
  Backend& be = backend_for(Device::cpu());
  Tensor s = Tensor::empty({4, 8}), n = Tensor::empty({4, 8}), m = Tensor::empty({4}),
         rs = Tensor::empty({4});
  Tensor r16 = r.to(DType::BF16);
  test::expect_error([&] { be.add_layer_norm(x, r16, &w, &b, 1e-5f, s, n, m, rs); },
                     {"add_layer_norm", "residual", "f32"});
  Tensor m_bad = Tensor::empty({3});
  test::expect_error([&] { be.add_layer_norm(x, r, &w, &b, 1e-5f, s, n, m_bad, rs); },
                     {"add_layer_norm", "mean", "one per row"});
  Tensor gs_bad = Tensor::empty({4, 7}), gx = Tensor::empty({4, 8});
  test::expect_error(
      [&] { be.add_layer_norm_backward(x, &gs_bad, x, &w, m, rs, gx, nullptr, nullptr); },
      {"add_layer_norm_backward", "grad_s", "must match s"});
}

TEST(AddLayerNorm, AMixedAddIsTheComposition) {
  // A bf16 x with an f32 residual: add's mixed rule (bf16 result), then layer_norm.
  Tensor x = randn({3, 10}, 27, DType::BF16), r = randn({3, 10}, 28);
  Tensor w = test::uniform({10}, 29, 0.5f, 1.5f), b = randn({10}, 30);
  AddLayerNorm a = add_layer_norm(x, r, w, b);
  const Tensor s = add(x, r);
  EXPECT_EQ(bytes_of(a.s), bytes_of(s));
  EXPECT_EQ(bytes_of(a.n), bytes_of(layer_norm(s, w, b)));
}

TEST(CudaAddLayerNorm, TheGpuMatchesTheCpuFusedAndComposed) {
  SKIP_WITHOUT_CUDA();
#ifdef MOKD_WITH_CUDA
  const bool was = cuda_fused_epilogues();
  for (bool fused_on : {true, false}) {
    cuda_set_fused_epilogues(fused_on);
    for (DType dt : {DType::F32, DType::BF16})
      for (const Shape& s : kShapes) {
        const std::string what =
            std::string(fused_on ? "fused " : "composed ") + dtype_name(dt) + " " + shape_str(s);
        const Result c = run(true, s, dt, true, true);
        const Result g = run(true, s, dt, true, true, Device::cuda());
        // s is one rounded add on both; the statistics are in double on both, so n and the
        // gradients differ by f32 rounding (a bf16 element by one ulp at most).
        EXPECT_EQ(bytes_of(g.s), bytes_of(c.s)) << what << ": s";
        const double tol = dt == DType::BF16 ? 1e-2 : 1e-5;
        test::expect_close(g.n.to(Device::cpu()).to(DType::F32), c.n.to(DType::F32), tol, tol,
                           what + ": n");
        test::expect_close(g.gx.to(Device::cpu()).to(DType::F32), c.gx.to(DType::F32), tol, tol,
                           what + ": gx");
        test::expect_close(g.gr.to(Device::cpu()).to(DType::F32), c.gr.to(DType::F32), tol, tol,
                           what + ": residual's gradient");
        test::expect_close(g.gw.to(Device::cpu()), c.gw, 1e-4, 1e-4, what + ": gw");
        test::expect_close(g.gb.to(Device::cpu()), c.gb, 1e-4, 1e-4, what + ": gb");
      }
  }
  cuda_set_fused_epilogues(was);
#endif
}

}  // namespace
}  // namespace mokd
