// CUDA GEMM through cuBLASLt: batched, strided, transposable; f32 (optionally TF32) or bf16
// operands with f32 accumulation. Row-major C = op(A) op(B) is computed as the column-major
// C^T = op(B)^T op(A)^T, so B is cuBLASLt's first operand. Heuristic results are cached per shape,
// dtype, transpose and alignment key; the workspace is one 32 MiB block of the caching allocator.
// Linear layers add their bias in cuBLASLt's epilogue (CUBLASLT_EPILOGUE_BIAS: one pass over c
// fewer than copying the bias in and accumulating). The GELU epilogues are not used: ViT/DeiT use
// the erf GELU, and the epilogue's GELU is not documented to be that form.
// The bias has c's dtype: cuBLASLt documents the epilogue's bias vector as of D's type
// (CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, exceptions only for integer and fp8 kernels), so a bf16 c
// takes a bf16 bias (as PyTorch's autocast rounds a linear's bias), added to the f32 accumulator
// before the one rounding.
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "engine/cuda/check.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/kernel_args.h"
#include "engine/kernel_costs.h"

namespace mokd {

namespace {

cudaDataType_t cuda_type(DType t) { return t == DType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

// Largest power of two (<= 256) dividing the address: cuBLASLt's heuristics assume 256-byte
// aligned operands unless told otherwise, and views may start anywhere.
uint32_t alignment(const void* p) {
  auto a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && (a % al) != 0) al >>= 1;
  return al;
}

struct LayoutGuard {
  cublasLtMatrixLayout_t l = nullptr;
  ~LayoutGuard() {
    if (l) cublasLtMatrixLayoutDestroy(l);
  }
};

void make_layout(LayoutGuard& g, cudaDataType_t t, int64_t rows, int64_t cols, int64_t ld,
                 int32_t batch, int64_t stride) {
  MOKD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&g.l, t, static_cast<uint64_t>(rows),
                                               static_cast<uint64_t>(cols), ld));
  if (batch > 1) {
    MOKD_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(g.l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                       &batch, sizeof(batch)));
    MOKD_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
        g.l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
  }
}

std::mutex g_cache_mu;
std::unordered_map<std::string, cublasLtMatmulHeuristicResult_t> g_algo_cache;

// One cuBLASLt call: row-major c [batch, M, N] = alpha op(a) op(b) + beta c, all operands batched
// with the given element strides (never 0 here).
void lt_matmul(CudaBackend& be, const void* pa, const void* pb, void* pc, DType ta_t, DType tc_t,
               int64_t batch, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
               int64_t sa, int64_t sb, int64_t sc, float alpha, float beta,
               const void* bias = nullptr) {
  const bool tf32 = ta_t == DType::F32 && cuda_tf32();
  const cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  const cudaDataType_t at = cuda_type(ta_t), ct = cuda_type(tc_t);
  const int32_t nb = static_cast<int32_t>(batch);

  cublasLtMatmulDesc_t op = nullptr;
  MOKD_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op, compute, CUDA_R_32F));
  struct OpGuard {
    cublasLtMatmulDesc_t d;
    ~OpGuard() { cublasLtMatmulDescDestroy(d); }
  } op_guard{op};
  // First operand: b (column-major N x K after op); second: a (K x M after op).
  cublasOperation_t t1 = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  cublasOperation_t t2 = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  MOKD_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &t1, sizeof(t1)));
  MOKD_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &t2, sizeof(t2)));
  if (bias) {  // a vector over the rows of the column-major result, i.e. over our N columns
    const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_t = ct;  // D's type, as documented
    MOKD_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof(epi)));
    MOKD_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
    MOKD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                     &bias_t, sizeof(bias_t)));
  }

  LayoutGuard l1, l2, lc;
  // b stored row-major [K, N] = column-major N x K (ld N); trans: [N, K] = column-major K x N.
  if (!trans_b)
    make_layout(l1, at, N, K, N, nb, sb);
  else
    make_layout(l1, at, K, N, K, nb, sb);
  // a stored row-major [M, K] = column-major K x M (ld K); trans: [K, M] = column-major M x K.
  if (!trans_a)
    make_layout(l2, at, K, M, K, nb, sa);
  else
    make_layout(l2, at, M, K, M, nb, sa);
  make_layout(lc, ct, N, M, N, nb, sc);

  size_t ws_bytes = 0;
  void* ws = be.lt_workspace(ws_bytes);
  const uint32_t al1 = alignment(pb), al2 = alignment(pa), alc = alignment(pc);

  std::string key = detail::concat(batch, ',', M, ',', N, ',', K, ',', trans_a, trans_b, ',',
                                   int(ta_t), int(tc_t), tf32, ',', sa, ',', sb, ',', al1, ',', al2,
                                   ',', alc, ',', beta != 0.f, ',', bias ? alignment(bias) : 0u);
  cublasLtMatmulHeuristicResult_t res{};
  bool cached = false;
  {
    std::lock_guard<std::mutex> lock(g_cache_mu);
    auto it = g_algo_cache.find(key);
    if (it != g_algo_cache.end()) {
      res = it->second;
      cached = true;
    }
  }
  if (!cached) {
    cublasLtMatmulPreference_t pref = nullptr;
    MOKD_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    struct PrefGuard {
      cublasLtMatmulPreference_t p;
      ~PrefGuard() { cublasLtMatmulPreferenceDestroy(p); }
    } pref_guard{pref};
    uint64_t wsb = ws_bytes;
    MOKD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof(wsb)));
    MOKD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al1, sizeof(al1)));
    MOKD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al2, sizeof(al2)));
    MOKD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &alc, sizeof(alc)));
    MOKD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &alc, sizeof(alc)));
    int found = 0;
    MOKD_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(be.lt_handle(), op, l1.l, l2.l, lc.l, lc.l,
                                                     pref, 1, &res, &found));
    if (found < 1)
      throw CudaError(detail::concat("cuBLASLt has no algorithm for batch ", batch, " M ", M, " N ",
                                     N, " K ", K, " (", dtype_name(ta_t), " -> ", dtype_name(tc_t),
                                     ")"));
    std::lock_guard<std::mutex> lock(g_cache_mu);
    g_algo_cache[key] = res;
  }
  count_launch();
  MOKD_CUBLAS_CHECK(cublasLtMatmul(be.lt_handle(), op, &alpha, pb, l1.l, pa, l2.l, &beta, pc, lc.l,
                                   pc, lc.l, &res.algo, ws, ws_bytes, be.stream()));
}

}  // namespace

void CudaBackend::gemm(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b,
                       float alpha, float beta) {
  const GemmShape s = gemm_args(DeviceType::CUDA, a, b, c, trans_a, trans_b);
  const GemmDims &da = s.a, &db = s.b, &dc = s.c;
  const int64_t M = s.M, N = s.N, K = s.K;

  const int64_t batch = dc.batch;
  if (batch == 0 || M == 0 || N == 0) return;

  cuda_guarded("gemm", {&a, &b, &c}, [&] {
    if (K == 0) {            // empty sum: c = beta c
      NestedKernels nested;  // part of this gemm call (noted already)
      if (beta == 0.f)
        fill(c, 0.0);
      else if (beta != 1.f)
        unary(UnaryOp::Scale, c, c, beta);  // f32 or bf16 c (rounded once)
      return;
    }
    MOKD_CHECK(batch < (int64_t(1) << 31), "gemm: batch ", batch, " too large for cuBLASLt");
    const size_t ea = dtype_size(a.dtype()), ec = dtype_size(c.dtype());
    const int64_t sa = da.rows * da.cols, sb = db.rows * db.cols, sc = M * N;
    const char* pa = static_cast<const char*>(a.raw_data());
    const char* pb = static_cast<const char*>(b.raw_data());
    char* pc = static_cast<char*>(c.raw_data());
    if (da.batch == db.batch) {
      lt_matmul(*this, pa, pb, pc, a.dtype(), c.dtype(), batch, M, N, K, trans_a, trans_b, sa, sb,
                sc, alpha, beta);
    } else if (db.batch == 1 && !trans_a) {
      // A shared b and a row-major [batch * M, K] a: one GEMM with M' = batch * M.
      lt_matmul(*this, pa, pb, pc, a.dtype(), c.dtype(), 1, batch * M, N, K, false, trans_b, 0, 0,
                0, alpha, beta);
    } else {
      // Other broadcasts: one product per batch entry (rare; keeps every stride non-zero).
      for (int64_t i = 0; i < batch; ++i) {
        const char* ai = pa + (da.batch == 1 ? 0 : i * sa) * ea;
        const char* bi = pb + (db.batch == 1 ? 0 : i * sb) * ea;
        lt_matmul(*this, ai, bi, pc + i * sc * ec, a.dtype(), c.dtype(), 1, M, N, K, trans_a,
                  trans_b, 0, 0, 0, alpha, beta);
      }
    }
  });
}

void CudaBackend::gemm_bias(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) {
  for (auto [t, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}, std::pair{&bias, "bias"},
                         std::pair<const Tensor*, const char*>{&c, "c"}})
    cuda_expect_on_gpu(*t, "gemm_bias", name);
  MOKD_CHECK(
      a.dtype() == b.dtype() && (a.dtype() == DType::F32 || a.dtype() == DType::BF16) &&
          (c.dtype() == DType::F32 || (c.dtype() == DType::BF16 && a.dtype() == DType::BF16)) &&
          bias.dtype() == c.dtype(),
      "gemm_bias: a ", a.str(), " and b ", b.str(), " must be both f32 or both bf16, c ", c.str(),
      " f32 (or bf16 with bf16 a and b) and bias ", bias.str(), " of c's dtype");
  MOKD_CHECK(a.dim() == 2 && b.dim() == 2 && c.dim() == 2, "gemm_bias: a ", a.str(), ", b ",
             b.str(), " and c ", c.str(), " must have rank 2");
  const GemmShape s = gemm_shape(a, b, c, false, true);
  MOKD_CHECK(bias.numel() == s.N, "gemm_bias: bias ", bias.str(), " must have ", s.N,
             " elements (the columns of c ", c.str(), ")");
  if (s.M == 0 || s.N == 0) return;
  // An empty product (c = bias), or a bias view off the 16-byte alignment the epilogue is known
  // to work with: the unfused default.
  if (s.K == 0 || alignment(bias.raw_data()) < 16) {
    Backend::gemm_bias(a, b, bias, c);
    return;
  }
  // Noted as the unfused default notes it (engine/kernel_costs.h).
  note_kernel("gemm_bias", {&a, &b, &bias}, {&c}, 2.0 * static_cast<double>(s.M) * s.N * s.K);
  cuda_guarded("gemm_bias", {&a, &b, &bias, &c}, [&] {
    lt_matmul(*this, a.raw_data(), b.raw_data(), c.raw_data(), a.dtype(), c.dtype(), 1, s.M, s.N,
              s.K, false, true, 0, 0, 0, 1.f, 0.f, bias.raw_data());
  });
}

}  // namespace mokd
