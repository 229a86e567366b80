// CPU elementwise kernels, reductions, one-hot.
#include <cmath>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

inline float unary_fwd(UnaryOp op, float x, float a) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Square: return x * x;
    case UnaryOp::Abs: return std::fabs(x);
    case UnaryOp::Relu: return x > 0.f ? x : 0.f;
    case UnaryOp::Gelu: return 0.5f * x * (1.f + std::erf(x * kInvSqrt2));
    case UnaryOp::Scale: return a * x;
    case UnaryOp::AddScalar: return x + a;
    case UnaryOp::SmoothL1: {
      float ax = std::fabs(x);
      return ax < a ? 0.5f * x * x / a : ax - 0.5f * a;
    }
    case UnaryOp::ClipCoef: return std::fmin(1.f, a / (x + 1e-6f));
    case UnaryOp::Reciprocal: return 1.f / x;
  }
  return 0.f;
}

// d op(x) / dx
inline float unary_deriv(UnaryOp op, float x, float a) {
  switch (op) {
    case UnaryOp::Neg: return -1.f;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return 1.f / x;
    case UnaryOp::Sqrt: return 0.5f / std::sqrt(x);
    case UnaryOp::Square: return 2.f * x;
    case UnaryOp::Abs: return x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
    case UnaryOp::Relu: return x > 0.f ? 1.f : 0.f;
    case UnaryOp::Gelu: {
      float cdf = 0.5f * (1.f + std::erf(x * kInvSqrt2));
      return cdf + x * kInvSqrt2Pi * std::exp(-0.5f * x * x);
    }
    case UnaryOp::Scale: return a;
    case UnaryOp::AddScalar: return 1.f;
    case UnaryOp::SmoothL1: return std::fabs(x) < a ? x / a : (x > 0.f ? 1.f : -1.f);
    case UnaryOp::ClipCoef: {
      float q = a / (x + 1e-6f);
      return q < 1.f ? -q / (x + 1e-6f) : 0.f;
    }
    case UnaryOp::Reciprocal: return -1.f / (x * x);
  }
  return 0.f;
}

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, float alpha) {
  cpu_expect_f32(x, unary_name(op), "x");
  cpu_expect_f32(out, unary_name(op), "out");
  const float* px = x.data<float>();
  float* po = out.data<float>();
  int64_t n = x.numel();
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) po[i] = unary_fwd(op, px[i], alpha);
}

void CpuBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& gout, Tensor& gin,
                                float alpha) {
  cpu_expect_f32(x, unary_name(op), "x");
  cpu_expect_f32(gout, unary_name(op), "grad_out");
  cpu_expect_f32(gin, unary_name(op), "grad_in");
  const float* px = x.data<float>();
  const float* pg = gout.data<float>();
  float* pi = gin.data<float>();
  int64_t n = x.numel();
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) pi[i] = pg[i] * unary_deriv(op, px[i], alpha);
}

namespace {
template <class F>
void binary_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const float* pa = static_cast<const float*>(a.raw_data());
  const float* pb = static_cast<const float*>(b.raw_data());
  float* po = out.data<float>();
  int64_t n = out.numel();
  if (a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
    return;
  }
  // Broadcast / strided operands: walk the output with an odometer, rows along the last dim.
  const Shape& s = out.shape();
  int64_t rank = out.dim();
  if (rank == 0) {
    po[0] = f(pa[0], pb[0]);
    return;
  }
  int64_t inner = s[rank - 1], rows = inner ? n / inner : 0;
  int64_t sa = a.strides()[rank - 1], sb = b.strides()[rank - 1];
#pragma omp parallel for if (n > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t oa = 0, ob = 0, rem = r;
    for (int64_t k = rank - 2; k >= 0; --k) {
      int64_t i = rem % s[k];
      rem /= s[k];
      oa += i * a.strides()[k];
      ob += i * b.strides()[k];
    }
    float* o = po + r * inner;
    for (int64_t i = 0; i < inner; ++i) o[i] = f(pa[oa + i * sa], pb[ob + i * sb]);
  }
}
}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  MOKD_CHECK(a.dtype() == DType::F32 && b.dtype() == DType::F32 && a.device().is_cpu() &&
                 b.device().is_cpu(),
             "binary: operands must be f32 on cpu, got ", a.str(), " and ", b.str());
  cpu_expect_f32(out, "binary", "out");
  MOKD_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), "binary: operands ", a.str(),
             " and ", b.str(), " must be expanded to the output ", out.str());
  switch (op) {
    case BinaryOp::Add: binary_loop(a, b, out, [](float x, float y) { return x + y; }); break;
    case BinaryOp::Sub: binary_loop(a, b, out, [](float x, float y) { return x - y; }); break;
    case BinaryOp::Mul: binary_loop(a, b, out, [](float x, float y) { return x * y; }); break;
    case BinaryOp::Div: binary_loop(a, b, out, [](float x, float y) { return x / y; }); break;
  }
}

void CpuBackend::reduce_sum(const Tensor& x, Tensor& out, float scale) {
  cpu_expect_f32(x, "reduce_sum", "x");
  cpu_expect_f32(out, "reduce_sum", "out");
  MOKD_CHECK(x.dim() == out.dim(), "reduce_sum: out ", out.str(), " must have the rank of x ", x.str());
  for (int64_t k = 0; k < x.dim(); ++k)
    MOKD_CHECK(out.shape()[k] == x.shape()[k] || out.shape()[k] == 1, "reduce_sum: out ", out.str(),
               " does not match x ", x.str());
  const float* px = x.data<float>();
  float* po = out.data<float>();
  int64_t on = out.numel(), n = x.numel();
  // Output-major: each output element sums its own inputs (double accumulation: deterministic
  // and accurate; the reference for the GPU's f32 tree reductions).
  // Decompose x = [outer..., inner] where inner is the trailing block that is fully reduced or
  // fully kept; general case uses index arithmetic per output element.
  const Shape& xs = x.shape();
  const Shape& os = out.shape();
  Shape ostr = contiguous_strides(os);
  std::vector<double> acc(on, 0.0);
  int64_t rank = x.dim();
  if (rank == 0) {
    po[0] = px[0] * scale;
    return;
  }
  int64_t inner = xs[rank - 1];
  bool inner_reduced = os[rank - 1] == 1 && inner != 1;
  int64_t rows = inner ? n / inner : 0;
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, o = 0;
    for (int64_t k = rank - 2; k >= 0; --k) {
      int64_t i = rem % xs[k];
      rem /= xs[k];
      if (os[k] != 1) o += i * ostr[k];
    }
    const float* row = px + r * inner;
    if (inner_reduced) {
      double s = 0;
      for (int64_t i = 0; i < inner; ++i) s += row[i];
      acc[o] += s;
    } else {
      for (int64_t i = 0; i < inner; ++i) acc[o + i] += row[i];
    }
  }
  for (int64_t i = 0; i < on; ++i) po[i] = static_cast<float>(acc[i] * scale);
}

void CpuBackend::argmax_lastdim(const Tensor& x, Tensor& out) {
  cpu_expect_f32(x, "argmax", "x");
  MOKD_CHECK(x.dim() >= 1 && x.size(-1) > 0, "argmax: needs a non-empty last dim, got ", x.str());
  MOKD_CHECK(out.dtype() == DType::I64 && out.numel() == x.numel() / x.size(-1), "argmax: out ",
             out.str(), " must be i64 with one element per row of ", x.str());
  int64_t c = x.size(-1), rows = x.numel() / c;
  const float* px = x.data<float>();
  int64_t* po = out.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = px + r * c;
    int64_t best = 0;
    for (int64_t i = 1; i < c; ++i)
      if (row[i] > row[best]) best = i;
    po[r] = best;
  }
}

void CpuBackend::sum_squares_accumulate(const Tensor& x, Tensor& out) {
  cpu_expect_f32(x, "sum_squares", "x");
  cpu_expect_f32(out, "sum_squares", "out");
  MOKD_CHECK(out.numel() == 1, "sum_squares: out must have one element, got ", out.str());
  const float* p = x.data<float>();
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += static_cast<double>(p[i]) * p[i];
  out.data<float>()[0] += static_cast<float>(s);
}

void CpuBackend::one_hot(const Tensor& labels, Tensor& out, float on, float off) {
  MOKD_CHECK(labels.dtype() == DType::I64 && labels.device().is_cpu() && labels.dim() == 1,
             "one_hot: labels must be i64 [B] on cpu, got ", labels.str());
  cpu_expect_f32(out, "one_hot", "out");
  MOKD_CHECK(out.dim() == 2 && out.size(0) == labels.size(0), "one_hot: out ", out.str(),
             " must be [B, C] for labels ", labels.str());
  int64_t B = out.size(0), C = out.size(1);
  Tensor lc = labels.contiguous();
  const int64_t* l = lc.data<int64_t>();
  float* po = out.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    MOKD_CHECK(l[b] >= 0 && l[b] < C, "one_hot: label ", l[b], " at index ", b,
               " is outside [0, ", C, ")");
    for (int64_t c = 0; c < C; ++c) po[b * C + c] = (c == l[b]) ? on : off;
  }
}

}  // namespace mokd
