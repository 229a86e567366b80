// CUDA scaled-dot-product attention (non-causal) and its backward: the shared contracts, the
// kernel's head-dim and grid limits, then launches of kernels/attention.cu. f32 only: under
// MatmulPrecision::BF16 engine/ops/attention.cpp does not call these kernels but runs batched bf16
// Backend::gemm products around an f32 Backend::softmax (and softmax_backward).
#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <limits>

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

namespace {
// The CUDA kernel's limits, after the shared contract (engine/kernel_args.h).
AttnDims cuda_attn_limits(const char* kernel, const AttnDims& a, const Tensor& q, const Tensor& k,
                          const Tensor& v) {
  MOKD_CHECK(a.d <= kernels::kAttnMaxDim && a.dv <= kernels::kAttnMaxDim, kernel,
             ": the CUDA kernel supports head dims up to ", kernels::kAttnMaxDim, ", got q ",
             q.str(), " and v ", v.str());
  MOKD_CHECK(a.bh < (int64_t(1) << 31) && (std::max(a.nq, a.nk) + 3) / 4 <= 65535, kernel,
             ": too many rows for the CUDA kernel's grid: q ", q.str(), ", k ", k.str());
  return a;
}
}  // namespace

void CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                            Tensor& out, Tensor& lse) {
  const AttnDims a =
      cuda_attn_limits("attention", attention_args(DeviceType::CUDA, q, k, v, out, lse), q, k, v);
  cuda_guarded("attention", {&q, &k, &v}, [&] {
    if (a.nk == 0) {  // softmax over nothing: no output, lse = log(0)
      kernels::fill(out.raw_data(), DType::F32, 0.0, out.numel(), stream());
      kernels::fill(lse.raw_data(), DType::F32, -std::numeric_limits<double>::infinity(),
                    lse.numel(), stream());
      return;
    }
    kernels::attention(cf(q), cf(k), cf(v), scale, mf(out), mf(lse), a.bh, a.nq, a.nk, a.d, a.dv,
                       stream());
  });
}

void CudaBackend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& out, const Tensor& lse, const Tensor& gout,
                                     float scale, Tensor& gq, Tensor& gk, Tensor& gv) {
  const AttnDims a = cuda_attn_limits(
      "attention_backward",
      attention_backward_args(DeviceType::CUDA, q, k, v, out, lse, gout, gq, gk, gv), q, k, v);
  cuda_guarded("attention_backward", {&q, &k, &v, &gout}, [&] {
    if (a.nk == 0) {
      kernels::fill(gq.raw_data(), DType::F32, 0.0, gq.numel(), stream());
      return;
    }
    Tensor delta = scratch((a.bh * a.nq + 1) / 2 + 1);  // bh * nq floats
    kernels::attention_backward(cf(q), cf(k), cf(v), cf(out), cf(lse), cf(gout), scale, mf(gq),
                                mf(gk), mf(gv), static_cast<float*>(delta.raw_data()), a.bh, a.nq,
                                a.nk, a.d, a.dv, stream());
  });
}

}  // namespace mokd
