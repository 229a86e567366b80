// Elementwise kernels: unary ops and their backward (same formulas as engine/cpu/elementwise.cpp),
// broadcast/strided binary ops, and a bias add over the last dim. Activations are float or bf16
// (launch.cuh): f32 math either way, one rounding per stored element. Memory traffic, in elements
// of each operand's own type (4 bytes for f32, 2 for bf16): unary reads n and writes n;
// unary_backward reads 2n, writes n; binary reads up to 2n (broadcast operands are re-read from
// cache; an f32 b beside a bf16 a reads 4 bytes per element), writes n; the f32 bias add reads and
// writes n floats.
#include <climits>

#include "engine/bf16.h"
#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

#define MOKD_GRID_STRIDE(i, n)                                                           \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;

__device__ __forceinline__ float unary_fwd(UnaryOp op, float x, float a) {
  switch (op) {
    case UnaryOp::Neg:
      return -x;
    case UnaryOp::Exp:
      return expf(x);
    case UnaryOp::Log:
      return logf(x);
    case UnaryOp::Sqrt:
      return sqrtf(x);
    case UnaryOp::Square:
      return x * x;
    case UnaryOp::Abs:
      return fabsf(x);
    case UnaryOp::Relu:
      return x > 0.f ? x : 0.f;
    case UnaryOp::Gelu:
      return 0.5f * x * (1.f + erff(x * kInvSqrt2));
    case UnaryOp::Scale:
      return a * x;
    case UnaryOp::AddScalar:
      return x + a;
    case UnaryOp::SmoothL1: {
      float ax = fabsf(x);
      return ax < a ? 0.5f * x * x / a : ax - 0.5f * a;
    }
    case UnaryOp::ClipCoef:
      return fminf(1.f, a / (x + 1e-6f));
    case UnaryOp::Reciprocal:
      return 1.f / x;
  }
  return 0.f;
}

__device__ __forceinline__ float unary_deriv(UnaryOp op, float x, float a) {
  switch (op) {
    case UnaryOp::Neg:
      return -1.f;
    case UnaryOp::Exp:
      return expf(x);
    case UnaryOp::Log:
      return 1.f / x;
    case UnaryOp::Sqrt:
      return 0.5f / sqrtf(x);
    case UnaryOp::Square:
      return 2.f * x;
    case UnaryOp::Abs:
      return x > 0.f ? 1.f : (x < 0.f ? -1.f : 0.f);
    case UnaryOp::Relu:
      return x > 0.f ? 1.f : 0.f;
    case UnaryOp::Gelu: {
      float cdf = 0.5f * (1.f + erff(x * kInvSqrt2));
      return cdf + x * kInvSqrt2Pi * expf(-0.5f * x * x);
    }
    case UnaryOp::Scale:
      return a;
    case UnaryOp::AddScalar:
      return 1.f;
    case UnaryOp::SmoothL1:
      return fabsf(x) < a ? x / a : (x > 0.f ? 1.f : -1.f);
    case UnaryOp::ClipCoef: {
      float q = a / (x + 1e-6f);
      return q < 1.f ? -q / (x + 1e-6f) : 0.f;
    }
    case UnaryOp::Reciprocal:
      return -1.f / (x * x);
  }
  return 0.f;
}

// The op is a template parameter so each kernel's inner loop has no switch.
template <UnaryOp OP, class T>
__global__ void unary_kernel(const T* x, T* out, int64_t n, float a) {
  MOKD_GRID_STRIDE(i, n) out[i] = store_as<T>(unary_fwd(OP, load_f32(x[i]), a));
}

template <UnaryOp OP, class T>
__global__ void unary_bwd_kernel(const T* x, const T* g, T* gin, int64_t n, float a) {
  MOKD_GRID_STRIDE(i, n) gin[i] = store_as<T>(load_f32(g[i]) * unary_deriv(OP, load_f32(x[i]), a));
}

template <BinaryOp OP>
__device__ __forceinline__ float bin(float x, float y) {
  if constexpr (OP == BinaryOp::Add)
    return x + y;
  else if constexpr (OP == BinaryOp::Sub)
    return x - y;
  else if constexpr (OP == BinaryOp::Mul)
    return x * y;
  else
    return x / y;
}

template <BinaryOp OP, class TA, class TB>
__global__ void binary_contig_kernel(const TA* a, const TB* b, TA* out, int64_t n) {
  MOKD_GRID_STRIDE(i, n) out[i] = store_as<TA>(bin<OP>(load_f32(a[i]), load_f32(b[i])));
}

template <BinaryOp OP, class I, class TA, class TB>
__global__ void binary_strided_kernel(const TA* a, const TB* b, TA* out, StridedDesc d, int64_t n) {
  MOKD_GRID_STRIDE(i, n) {
    int64_t oa, ob;
    strided_offsets<I>(d, i, oa, ob);
    out[i] = store_as<TA>(bin<OP>(load_f32(a[oa]), load_f32(b[ob])));
  }
}

template <BinaryOp OP, class TA, class TB>
void binary_typed(const TA* a, const TB* b, TA* out, const StridedDesc& d, int64_t n,
                  bool contiguous, cudaStream_t st) {
  StridedDesc dc = d;
  if (!contiguous) collapse_dims(dc);  // out is contiguous: merging a's and b's runs is enough
  if (contiguous || (dc.rank == 1 && dc.sa[0] == 1 && dc.sb[0] == 1))
    binary_contig_kernel<OP><<<grid_for(n), kThreads, 0, st>>>(a, b, out, n);
  else if (n <= INT32_MAX)
    binary_strided_kernel<OP, uint32_t><<<grid_for(n), kThreads, 0, st>>>(a, b, out, dc, n);
  else
    binary_strided_kernel<OP, int64_t><<<grid_for(n), kThreads, 0, st>>>(a, b, out, dc, n);
}

__global__ void add_bias_kernel(float* y, const float* bias, int64_t n, int64_t c) {
  MOKD_GRID_STRIDE(i, n) y[i] += bias[i % c];
}

template <class T>
__global__ void bias_act_kernel(const T* x, const float* bias, const T* residual, bool relu, T* y,
                                int64_t n, int64_t c) {
  MOKD_GRID_STRIDE(i, n) {
    float v = load_f32(x[i]) + bias[i % c];
    if (residual) v += load_f32(residual[i]);
    if (relu) v = v > 0.f ? v : 0.f;
    y[i] = store_as<T>(v);
  }
}

}  // namespace

// The formatter does not settle on one layout for this list.
// clang-format off
#define MOKD_UNARY_CASES(X) \
  X(Neg) X(Exp) X(Log) X(Sqrt) X(Square) X(Abs) X(Relu) X(Gelu) X(Scale) X(AddScalar) \
  X(SmoothL1) X(ClipCoef) X(Reciprocal)
// clang-format on

template <class T>
void unary(UnaryOp op, const T* x, T* out, int64_t n, float alpha, cudaStream_t stream) {
  if (n == 0) return;
  unsigned g = grid_for(n);
  switch (op) {
#define X(name)                                                                   \
  case UnaryOp::name:                                                             \
    unary_kernel<UnaryOp::name, T><<<g, kThreads, 0, stream>>>(x, out, n, alpha); \
    break;
    MOKD_UNARY_CASES(X)
#undef X
  }
  check_launch(unary_name(op));
}

template <class T>
void unary_backward(UnaryOp op, const T* x, const T* gout, T* gin, int64_t n, float alpha,
                    cudaStream_t stream) {
  if (n == 0) return;
  unsigned g = grid_for(n);
  switch (op) {
#define X(name)                                                                             \
  case UnaryOp::name:                                                                       \
    unary_bwd_kernel<UnaryOp::name, T><<<g, kThreads, 0, stream>>>(x, gout, gin, n, alpha); \
    break;
    MOKD_UNARY_CASES(X)
#undef X
  }
  check_launch(unary_name(op));
}

template <class TA, class TB>
void binary(BinaryOp op, const TA* a, const TB* b, TA* out, const StridedDesc& d, int64_t n,
            bool contiguous, cudaStream_t stream) {
  if (n == 0) return;
  switch (op) {
    case BinaryOp::Add:
      binary_typed<BinaryOp::Add>(a, b, out, d, n, contiguous, stream);
      break;
    case BinaryOp::Sub:
      binary_typed<BinaryOp::Sub>(a, b, out, d, n, contiguous, stream);
      break;
    case BinaryOp::Mul:
      binary_typed<BinaryOp::Mul>(a, b, out, d, n, contiguous, stream);
      break;
    case BinaryOp::Div:
      binary_typed<BinaryOp::Div>(a, b, out, d, n, contiguous, stream);
      break;
  }
  check_launch("binary");
}

template void unary(UnaryOp, const float*, float*, int64_t, float, cudaStream_t);
template void unary(UnaryOp, const bf16*, bf16*, int64_t, float, cudaStream_t);
template void unary_backward(UnaryOp, const float*, const float*, float*, int64_t, float,
                             cudaStream_t);
template void unary_backward(UnaryOp, const bf16*, const bf16*, bf16*, int64_t, float,
                             cudaStream_t);
template void binary(BinaryOp, const float*, const float*, float*, const StridedDesc&, int64_t,
                     bool, cudaStream_t);
template void binary(BinaryOp, const bf16*, const bf16*, bf16*, const StridedDesc&, int64_t, bool,
                     cudaStream_t);
template void binary(BinaryOp, const bf16*, const float*, bf16*, const StridedDesc&, int64_t, bool,
                     cudaStream_t);

void add_bias_lastdim(float* y, const float* bias, int64_t rows, int64_t c, cudaStream_t stream) {
  int64_t n = rows * c;
  if (n == 0) return;
  add_bias_kernel<<<grid_for(n), kThreads, 0, stream>>>(y, bias, n, c);
  check_launch("add_bias");
}

template <class T>
void bias_act(const T* x, const float* bias, const T* residual, bool relu, T* y, int64_t n,
              int64_t c, cudaStream_t stream) {
  if (n == 0) return;
  bias_act_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(x, bias, residual, relu, y, n, c);
  check_launch("bias_act");
}
template void bias_act(const float*, const float*, const float*, bool, float*, int64_t, int64_t,
                       cudaStream_t);
template void bias_act(const bf16*, const float*, const bf16*, bool, bf16*, int64_t, int64_t,
                       cudaStream_t);

}  // namespace mokd::kernels
