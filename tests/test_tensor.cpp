// Tensor basics: views share storage, copies convert, bf16 rounding, Philox streams, errors.
#include <cmath>

#include "engine/bf16.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

TEST(Tensor, FactoriesAndMetadata) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.size(-1), 4);
  EXPECT_EQ(t.strides(), (Shape{12, 4, 1}));
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(t.str(), "f32[2, 3, 4] on cpu");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 64, 0u);  // 64-byte aligned
  for (float v : t.to_vector()) EXPECT_EQ(v, 0.f);
  EXPECT_THROW(t.size(3), Error);
  EXPECT_THROW(Tensor::from_vector({1.f, 2.f}, {3}), Error);
}

TEST(Tensor, ViewsShareStorage) {
  Tensor t = Tensor::from_vector({0, 1, 2, 3, 4, 5}, {2, 3});
  Tensor v = t.view({3, 2});
  EXPECT_EQ(v.storage(), t.storage());
  Tensor n = t.narrow_view(1, 1, 2);  // [[1,2],[4,5]]
  EXPECT_FALSE(n.is_contiguous());
  EXPECT_EQ(n.contiguous().to_vector(), (std::vector<float>{1, 2, 4, 5}));
  Tensor p = t.permute_view({1, 0});
  EXPECT_EQ(p.contiguous().to_vector(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(Tensor, FillOfStridedViewIsRejected) {
  Tensor t = Tensor::zeros({2, 3});
  Tensor n = t.narrow_view(1, 1, 2);
  EXPECT_THROW(n.fill_(1.0), Error);
}

TEST(Tensor, ViewErrorsNameShapes) {
  Tensor t = Tensor::zeros({2, 3});
  try {
    t.view({4, 2});
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("[2, 3]"), std::string::npos) << m;
    EXPECT_NE(m.find("[4, 2]"), std::string::npos) << m;
  }
  EXPECT_EQ(t.view({-1}).shape(), (Shape{6}));
  EXPECT_THROW(t.view({-1, -1}), Error);
  EXPECT_THROW(t.permute_view({0, 0}), Error);
  EXPECT_THROW(t.narrow_view(1, 2, 2), Error);
  EXPECT_THROW(t.permute_view({1, 0}).view({6}), Error);
}

TEST(Tensor, ExpandGivesZeroStrides) {
  Tensor t = Tensor::from_vector({1, 2, 3}, {3, 1});
  Tensor e = t.expand_view({2, 3, 4});
  EXPECT_EQ(e.strides(), (Shape{0, 1, 0}));
  auto v = e.contiguous().to_vector();
  EXPECT_EQ(v[0], 1.f);
  EXPECT_EQ(v[4], 2.f);
  EXPECT_EQ(v[23], 3.f);
  EXPECT_THROW(t.expand_view({3, 2, 4, 5}), Error);
}

TEST(Tensor, DtypeConversions) {
  Tensor f = Tensor::from_vector({1.5f, -2.25f, 3.f}, {3});
  Tensor i = f.to(DType::I64);
  EXPECT_EQ(i.to_vector_i64(), (std::vector<int64_t>{1, -2, 3}));
  Tensor b = f.to(DType::BF16);
  EXPECT_EQ(b.nbytes(), 6u);
  EXPECT_EQ(b.to_vector(), (std::vector<float>{1.5f, -2.25f, 3.f}));  // exact in bf16
  Tensor d = f.to(DType::F64);
  EXPECT_EQ(d.to(DType::F32).to_vector(), f.to_vector());
  EXPECT_THROW(f.data<int64_t>(), Error);
}

TEST(Tensor, CudaDeviceIsAClearErrorWithoutBackend) {
  if (device_available(Device::cuda())) GTEST_SKIP() << "a CUDA backend is present";
  EXPECT_THROW(Tensor::zeros({2}, DType::F32, Device::cuda()), Error);
  EXPECT_EQ(parse_device("cuda:1"), Device::cuda(1));
  EXPECT_THROW(parse_device("gpu"), Error);
}

// bf16 rounding: round-to-nearest-even against PyTorch (tools/reference/ops_elementwise.py).
TEST(Bf16, MatchesTorchRounding) {
  auto fx = test::load_fixture("ops_elementwise.safetensors");
  Tensor x = fx.at("bf16.input");
  Tensor torch_bf16 = fx.at("bf16.rounded");  // torch's bf16, loaded back as f32 exactly
  auto xv = x.to_vector(), ev = torch_bf16.to_vector();
  for (size_t i = 0; i < xv.size(); ++i)
    EXPECT_EQ(bf16_to_float(float_to_bf16(xv[i])), ev[i]) << "element " << i << " = " << xv[i];
}

TEST(Bf16, EdgeCases) {
  EXPECT_EQ(float_to_bf16(1.0f).bits, 0x3f80);
  // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
  EXPECT_EQ(float_to_bf16(1.00390625f).bits, 0x3f80);
  // 1 + 3 * 2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even): rounds up.
  EXPECT_EQ(float_to_bf16(1.01171875f).bits, 0x3f82);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(INFINITY))));
  EXPECT_EQ(float_to_bf16(3.4e38f).bits, 0x7f80);  // overflows to +inf when rounding up
}

// Random123's published known-answer vectors for Philox4x32-10.
TEST(Rng, PhiloxKnownAnswers) {
  Philox4 a = philox4x32(0, 0, 0, 0, 0, 0);
  EXPECT_EQ(a.v[0], 0x6627e8d5u);
  EXPECT_EQ(a.v[1], 0xe169c58du);
  EXPECT_EQ(a.v[2], 0xbc57ac4cu);
  EXPECT_EQ(a.v[3], 0x9b00dbd8u);
  Philox4 b = philox4x32(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT_EQ(b.v[0], 0x408f276du);
  EXPECT_EQ(b.v[3], 0x6d5451fdu);
  Philox4 c =
      philox4x32(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  EXPECT_EQ(c.v[0], 0xd16cfe09u);
  EXPECT_EQ(c.v[1], 0x94fdccebu);
  EXPECT_EQ(c.v[2], 0x5001e420u);
  EXPECT_EQ(c.v[3], 0x24126ea1u);
}

TEST(Rng, StreamsAreReproducibleAndIndependent) {
  Tensor a = Tensor::empty({1000}), b = Tensor::empty({1000}), c = Tensor::empty({1000});
  Generator g1(42, Stream::Init), g2(42, Stream::Init), g3(42, Stream::Dropout);
  uniform_(a, 0.f, 1.f, g1);
  uniform_(b, 0.f, 1.f, g2);
  uniform_(c, 0.f, 1.f, g3);
  EXPECT_EQ(a.to_vector(), b.to_vector());
  EXPECT_NE(a.to_vector(), c.to_vector());
  // Consecutive draws do not overlap.
  Tensor d = Tensor::empty({1000});
  uniform_(d, 0.f, 1.f, g1);
  EXPECT_NE(a.to_vector(), d.to_vector());
}

TEST(Rng, DistributionMoments) {
  Tensor u = Tensor::empty({200000}), n = Tensor::empty({200000});
  Generator g(7, Stream::Init);
  uniform_(u, -1.f, 3.f, g);
  normal_(n, 0.5f, 2.f, g);
  auto moments = [](const std::vector<float>& v) {
    double m = 0, s = 0;
    for (float x : v) m += x;
    m /= v.size();
    for (float x : v) s += (x - m) * (x - m);
    return std::pair<double, double>(m, s / v.size());
  };
  auto [um, uv] = moments(u.to_vector());
  EXPECT_NEAR(um, 1.0, 0.02);
  EXPECT_NEAR(uv, 16.0 / 12.0, 0.02);
  auto [nm, nv] = moments(n.to_vector());
  EXPECT_NEAR(nm, 0.5, 0.02);
  EXPECT_NEAR(nv, 4.0, 0.05);
  for (float x : u.to_vector()) ASSERT_TRUE(x >= -1.f && x < 3.f);
}

}  // namespace
}  // namespace mokd
