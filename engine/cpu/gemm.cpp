// CPU matrix products: batched, transposable GEMM over Eigen row-major maps.
#include <omp.h>

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

// The checked f32 product (a and b f32: bf16 operands come here widened).
void gemm_f32(const Tensor& a, const Tensor& b, Tensor& c, const GemmShape& s, bool trans_a,
              bool trans_b, float alpha, float beta);

}  // namespace

void CpuBackend::gemm(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b,
                      float alpha, float beta) {
  const GemmShape s = gemm_args(DeviceType::CPU, a, b, c, trans_a, trans_b);
  if (a.dtype() == DType::BF16) {
    // bf16 operands, f32 accumulation (MatmulPrecision::BF16): widen exactly, multiply in f32,
    // and round a bf16 c once at the end, as cuBLASLt's bf16 products do.
    NestedKernels nested;  // the widening copies are part of this call (noted already)
    if (c.dtype() == DType::F32) {
      gemm_f32(a.to(DType::F32), b.to(DType::F32), c, s, trans_a, trans_b, alpha, beta);
      return;
    }
    Tensor cf = beta != 0.f ? c.to(DType::F32) : Tensor::empty(c.shape(), DType::F32);
    gemm_f32(a.to(DType::F32), b.to(DType::F32), cf, s, trans_a, trans_b, alpha, beta);
    c.copy_(cf);
    return;
  }
  gemm_f32(a, b, c, s, trans_a, trans_b, alpha, beta);
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

  // Small batches of large matrices: one product at a time, each spread over Eigen's own
  // threads. Otherwise one thread per product (Eigen runs serially inside a parallel region).
  const double flops_each = 2.0 * static_cast<double>(M) * N * K;
  const bool per_product_threads = batch < omp_get_max_threads() && flops_each > 4e6;
  if (batch == 1 || per_product_threads) {
    for (int64_t i = 0; i < batch; ++i)
      gemm_one(pa + i * sa, pb + i * sb, pc + i * sc, da, db, M, N, trans_a, trans_b, alpha, beta);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < batch; ++i)
    gemm_one(pa + i * sa, pb + i * sb, pc + i * sc, da, db, M, N, trans_a, trans_b, alpha, beta);
}

}  // namespace

}  // namespace mokd
