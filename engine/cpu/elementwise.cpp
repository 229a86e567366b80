// CPU elementwise kernels, reductions, one-hot.
#include <cmath>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

inline float unary_fwd(UnaryOp op, float x, float a) {
  switch (op) {
    case UnaryOp::Neg:
      return -x;
    case UnaryOp::Exp:
      return std::exp(x);
    case UnaryOp::Log:
      return std::log(x);
    case UnaryOp::Sqrt:
      return std::sqrt(x);
    case UnaryOp::Square:
      return x * x;
    case UnaryOp::Abs:
      return std::fabs(x);
    case UnaryOp::Relu:
      return x > 0.f ? x : 0.f;
    case UnaryOp::Gelu:
      return 0.5f * x * (1.f + std::erf(x * kInvSqrt2));
    case UnaryOp::Scale:
      return a * x;
    case UnaryOp::AddScalar:
      return x + a;
    case UnaryOp::SmoothL1: {
      float ax = std::fabs(x);
      return ax < a ? 0.5f * x * x / a : ax - 0.5f * a;
    }
    case UnaryOp::ClipCoef:
      return std::fmin(1.f, a / (x + 1e-6f));
    case UnaryOp::Reciprocal:
      return 1.f / x;
  }
  return 0.f;
}

// d op(x) / dx
inline float unary_deriv(UnaryOp op, float x, float a) {
  switch (op) {
    case UnaryOp::Neg:
      return -1.f;
    case UnaryOp::Exp:
      return std::exp(x);
    case UnaryOp::Log:
      return 1.f / x;
    case UnaryOp::Sqrt:
      return 0.5f / std::sqrt(x);
    case UnaryOp::Square:
      return 2.f * x;
    case UnaryOp::Abs:
      return x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
    case UnaryOp::Relu:
      return x > 0.f ? 1.f : 0.f;
    case UnaryOp::Gelu: {
      float cdf = 0.5f * (1.f + std::erf(x * kInvSqrt2));
      return cdf + x * kInvSqrt2Pi * std::exp(-0.5f * x * x);
    }
    case UnaryOp::Scale:
      return a;
    case UnaryOp::AddScalar:
      return 1.f;
    case UnaryOp::SmoothL1:
      return std::fabs(x) < a ? x / a : (x > 0.f ? 1.f : -1.f);
    case UnaryOp::ClipCoef: {
      float q = a / (x + 1e-6f);
      return q < 1.f ? -q / (x + 1e-6f) : 0.f;
    }
    case UnaryOp::Reciprocal:
      return -1.f / (x * x);
  }
  return 0.f;
}

}  // namespace

void CpuBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, float alpha) {
  unary_args(DeviceType::CPU, op, x, out);
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* po = out.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) po[i] = store_as<T>(unary_fwd(op, load_f32(px[i]), alpha));
  });
}

void CpuBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& gout, Tensor& gin,
                                float alpha) {
  unary_backward_args(DeviceType::CPU, op, x, gout, gin);
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pg = gout.data<T>();
    T* pi = gin.data<T>();
    const int64_t n = x.numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i)
      pi[i] = store_as<T>(load_f32(pg[i]) * unary_deriv(op, load_f32(px[i]), alpha));
  });
}

namespace {
// out = f(a, b) elementwise; a and out store TA, b stores TB (TA, or f32 under a bf16 TA).
template <class TA, class TB, class F>
void binary_loop(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  const TA* pa = static_cast<const TA*>(a.raw_data());
  const TB* pb = static_cast<const TB*>(b.raw_data());
  TA* po = out.data<TA>();
  auto at = [&](int64_t ia, int64_t ib) {
    return store_as<TA>(f(load_f32(pa[ia]), load_f32(pb[ib])));
  };
  int64_t n = out.numel();
  if (a.is_contiguous() && b.is_contiguous()) {
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) po[i] = at(i, i);
    return;
  }
  // Broadcast / strided operands: walk the output with an odometer, rows along the last dim.
  const Shape& s = out.shape();
  int64_t rank = out.dim();
  if (rank == 0) {
    po[0] = at(0, 0);
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
    TA* o = po + r * inner;
    for (int64_t i = 0; i < inner; ++i) o[i] = at(oa + i * sa, ob + i * sb);
  }
}

template <class F>
void binary_dispatch(const Tensor& a, const Tensor& b, Tensor& out, F f) {
  if (a.dtype() == DType::F32)
    binary_loop<float, float>(a, b, out, f);
  else if (b.dtype() == DType::BF16)
    binary_loop<bf16, bf16>(a, b, out, f);
  else
    binary_loop<bf16, float>(a, b, out, f);
}
}  // namespace

void CpuBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  binary_args(DeviceType::CPU, a, b, out);
  switch (op) {
    case BinaryOp::Add:
      binary_dispatch(a, b, out, [](float x, float y) { return x + y; });
      break;
    case BinaryOp::Sub:
      binary_dispatch(a, b, out, [](float x, float y) { return x - y; });
      break;
    case BinaryOp::Mul:
      binary_dispatch(a, b, out, [](float x, float y) { return x * y; });
      break;
    case BinaryOp::Div:
      binary_dispatch(a, b, out, [](float x, float y) { return x / y; });
      break;
  }
}

namespace {
template <class TX, class TO>
// Sums x (stored as TX) into out (stored as TO).
void reduce_sum_typed(const TX* px, const Tensor& x, TO* po, const Tensor& out, float scale) {
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
    po[0] = store_as<TO>(load_f32(px[0]) * scale);
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
    const TX* row = px + r * inner;
    if (inner_reduced) {
      double s = 0;
      for (int64_t i = 0; i < inner; ++i) s += load_f32(row[i]);
      acc[o] += s;
    } else {
      for (int64_t i = 0; i < inner; ++i) acc[o + i] += load_f32(row[i]);
    }
  }
  for (int64_t i = 0; i < on; ++i) po[i] = store_as<TO>(static_cast<float>(acc[i] * scale));
}
}  // namespace

void CpuBackend::reduce_sum(const Tensor& x, Tensor& out, float scale) {
  reduce_sum_args(DeviceType::CPU, x, out);
  with_activation_type(x.dtype(), [&](auto xt) {
    with_activation_type(out.dtype(), [&](auto ot) {
      reduce_sum_typed(x.data<decltype(xt)>(), x, out.data<decltype(ot)>(), out, scale);
    });
  });
}

void CpuBackend::argmax_lastdim(const Tensor& x, Tensor& out) {
  const RowDims d = argmax_args(DeviceType::CPU, x, out);
  const int64_t c = d.cols, rows = d.rows;
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
  sum_squares_args(DeviceType::CPU, x, out);
  const float* p = x.data<float>();
  double s = 0;
  for (int64_t i = 0; i < x.numel(); ++i) s += static_cast<double>(p[i]) * p[i];
  out.data<float>()[0] += static_cast<float>(s);
}

void CpuBackend::one_hot(const Tensor& labels, Tensor& out, float on, float off) {
  const LossDims d = one_hot_args(DeviceType::CPU, labels, out);
  const int64_t B = d.B, C = d.C;
  Tensor lc = labels.contiguous();
  const int64_t* l = lc.data<int64_t>();
  float* po = out.data<float>();
  for (int64_t b = 0; b < B; ++b) {
    MOKD_CHECK(l[b] >= 0 && l[b] < C, "one_hot: label ", l[b], " at index ", b, " is outside [0, ",
               C, ")");
    for (int64_t c = 0; c < C; ++c) po[b * C + c] = (c == l[b]) ? on : off;
  }
}

}  // namespace mokd
