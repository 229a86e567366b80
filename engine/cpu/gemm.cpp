// CPU matrix products: batched, transposable GEMM over Eigen row-major maps.
#include <omp.h>

#include <vector>

#include <Eigen/Core>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_costs.h"

namespace mokd {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat>;
using MutMap = Eigen::Map<RowMat>;

// c_i = alpha * op(a_i) op(b_i) + beta * c_i for one matrix of the batch.
void gemm_one(const float* pa, const float* pb, float* pc, const GemmDims& da, const GemmDims& db,
              int64_t M, int64_t N, bool ta, bool tb, float alpha, float beta) {
  ConstMap A(pa, da.rows, da.cols);
  ConstMap B(pb, db.rows, db.cols);
  MutMap C(pc, M, N);
  // beta == 0 must not read c: it may be uninitialised (NaN * 0 is NaN). Eigen's noalias()
  // assignment zeroes the destination before accumulating the product.
  if (beta == 0.f) {
    if (!ta && !tb)
      C.noalias() = alpha * (A * B);
    else if (ta && !tb)
      C.noalias() = alpha * (A.transpose() * B);
    else if (!ta && tb)
      C.noalias() = alpha * (A * B.transpose());
    else
      C.noalias() = alpha * (A.transpose() * B.transpose());
    return;
  }
  if (beta != 1.f) C *= beta;
  if (!ta && !tb)
    C.noalias() += alpha * (A * B);
  else if (ta && !tb)
    C.noalias() += alpha * (A.transpose() * B);
  else if (!ta && tb)
    C.noalias() += alpha * (A * B.transpose());
  else
    C.noalias() += alpha * (A.transpose() * B.transpose());
}

// The checked f32 product.
void gemm_f32(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& s, bool trans_a,
              bool trans_b, float alpha, float beta);

// Small batches of large matrices: one product at a time, each spread over Eigen's own threads.
// Otherwise one thread per product (Eigen runs serially inside a parallel region).
template <class F>
void for_each_product(int64_t batch, int64_t M, int64_t N, int64_t K, F product) {
  const double flops_each = 2.0 * static_cast<double>(M) * N * K;
  const bool per_product_threads = batch < omp_get_max_threads() && flops_each > 4e6;
  if (batch == 1 || per_product_threads) {
    for (int64_t i = 0; i < batch; ++i) product(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < batch; ++i) product(i);
}

// bf16 operands, f32 accumulation (MatmulPrecision::BF16), as cuBLASLt's bf16 products: each
// product's operands are widened exactly into scratch, multiplied in f32, and a bf16 c is rounded
// once at the end. The scratch holds one product at a time (the CPU's stand-in for the tensor
// cores' registers), not whole widened tensors.
// With a bias (gemm_bias into a bf16 c): each product starts from the widened bf16 bias on every
// row and accumulates on top (beta = 1), as the f32 default does, before the one rounding.
void gemm_bf16(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& s, bool trans_a,
               bool trans_b, float alpha, float beta, const bf16* bias = nullptr) {
  const GemmDims &da = s.a, &db = s.b, &dc = s.c;
  const int64_t M = s.M, N = s.N, K = s.K, batch = dc.batch;
  if (batch == 0 || M == 0 || N == 0) return;
  const bf16* pa = a.data<bf16>();
  const bf16* pb = b.data<bf16>();
  const bool c16 = c.dtype() == DType::BF16;
  float* pc32 = c16 ? nullptr : c.data<float>();
  bf16* pc16 = c16 ? c.data<bf16>() : nullptr;
  const int64_t na = da.rows * da.cols, nb = db.rows * db.cols, nc = M * N;
  const int64_t sa = da.batch == 1 ? 0 : na, sb = db.batch == 1 ? 0 : nb;
  auto widen = [](const bf16* src, int64_t n, std::vector<float>& dst) {
    dst.resize(n);
    for (int64_t j = 0; j < n; ++j) dst[j] = load_f32(src[j]);
  };
  for_each_product(batch, M, N, K, [&](int64_t i) {
    std::vector<float> fa, fb, fc;
    widen(pa + i * sa, na, fa);
    widen(pb + i * sb, nb, fb);
    float* out = pc32 ? pc32 + i * nc : nullptr;
    float b_i = beta;
    if (c16) {
      if (bias) {
        fc.resize(nc);
        for (int64_t r = 0; r < M; ++r)
          for (int64_t j = 0; j < N; ++j) fc[r * N + j] = load_f32(bias[j]);
        b_i = 1.f;
      } else if (beta != 0.f) {
        widen(pc16 + i * nc, nc, fc);
      } else {
        fc.resize(nc);
      }
      out = fc.data();
    }
    gemm_one(fa.data(), fb.data(), out, da, db, M, N, trans_a, trans_b, alpha, b_i);
    if (c16)
      for (int64_t j = 0; j < nc; ++j) pc16[i * nc + j] = store_as<bf16>(fc[j]);
  });
}

}  // namespace

void CpuBackend::gemm(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b,
                      float alpha, float beta) {
  const GemmShape s = gemm_args(DeviceType::CPU, a, b, c, trans_a, trans_b);
  if (a.dtype() == DType::BF16) {
    gemm_bf16(a, b, c, s, trans_a, trans_b, alpha, beta);
    return;
  }
  gemm_f32(a, b, c, s, trans_a, trans_b, alpha, beta);
}

void CpuBackend::gemm_bias(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) {
  if (c.dtype() != DType::BF16) {
    Backend::gemm_bias(a, b, bias, c);
    return;
  }
  MOKD_CHECK(c.dim() == 2 && bias.numel() == c.size(-1), "gemm_bias: bias ", bias.str(),
             " must have one element per column of c ", c.str());
  MOKD_CHECK(bias.dtype() == DType::BF16 && bias.is_contiguous(), "gemm_bias: bias ", bias.str(),
             " must be contiguous bf16 for the bf16 c ", c.str());
  // One kernel call as the ledger sees it, as the default and the CUDA backend note it.
  note_kernel("gemm_bias", {&a, &b, &bias}, {&c},
              2.0 * static_cast<double>(c.size(0)) * c.size(1) * a.size(-1));
  NestedKernels nested;
  const GemmShape s = gemm_args(DeviceType::CPU, a, b, c, false, true);
  MOKD_CHECK(a.dtype() == DType::BF16, "gemm_bias: a bf16 c needs bf16 a and b, got a ", a.str());
  gemm_bf16(a, b, c, s, false, true, 1.f, 0.f, bias.data<bf16>());
}

namespace {

void gemm_f32(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& s, bool trans_a,
              bool trans_b, float alpha, float beta) {
  const GemmDims &da = s.a, &db = s.b, &dc = s.c;
  const int64_t M = s.M, N = s.N, K = s.K;

  const int64_t batch = dc.batch;
  if (batch == 0 || M == 0 || N == 0) return;
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* pc = c.data<float>();
  // A batch-1 operand is shared by every product (stride 0).
  const int64_t sa = da.batch == 1 ? 0 : da.rows * da.cols;
  const int64_t sb = db.batch == 1 ? 0 : db.rows * db.cols;
  const int64_t sc = M * N;

  for_each_product(batch, M, N, K, [&](int64_t i) {
    gemm_one(pa + i * sa, pb + i * sb, pc + i * sc, da, db, M, N, trans_a, trans_b, alpha, beta);
  });
}

}  // namespace

}  // namespace mokd
