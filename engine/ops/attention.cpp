// Scaled-dot-product attention over [B, H, N, D] (non-causal, any token count): the backend's
// fused kernel in f32, batched bf16 products around an f32 softmax under MatmulPrecision::BF16.
#include "engine/ops/common.h"
#include "engine/precision.h"

namespace mokd {

namespace {

// Attention under MatmulPrecision::BF16 (engine/precision.h): the two products of the forward
// and the four of the backward run as batched GEMMs with bf16 operands and f32 accumulation
// (tensor cores on the GPU), softmax and its backward in f32. Costs B*H*N*Nk f32 scores per call
// (saved for backward) where the fused f32 kernel keeps only a log-sum-exp per row.
//   S = scale q k^T,  P = softmax(S),  out = P v
//   dP = g v^T,  dv = P^T g,  dS = P * (dP - rowsum(dP * P)),  dq = scale dS k,  dk = scale dS^T q
Tensor attention_bf16_products(const Tensor& q, const Tensor& k, const Tensor& v, float scale) {
  const int64_t B = q.size(0), H = q.size(1), N = q.size(2), D = q.size(3), Nk = k.size(2);
  const int64_t BH = B * H;
  Backend& be = backend_for(q);
  Tensor qb = detail::contiguous_as(q, DType::BF16).view({BH, N, D});
  Tensor kb = detail::contiguous_as(k, DType::BF16).view({BH, Nk, D});
  Tensor vb = detail::contiguous_as(v, DType::BF16).view({BH, Nk, D});
  Tensor s = Tensor::empty({BH, N, Nk}, DType::F32, q.device());
  be.gemm(qb, kb, s, false, true, scale, 0.f);
  Tensor prob = Tensor::empty({BH, N, Nk}, DType::F32, q.device());
  be.softmax(s, prob, false);
  s = Tensor();  // the scores' memory goes back before the next product
  Tensor out = Tensor::empty({BH, N, D}, DType::F32, q.device());
  be.gemm(prob.to(DType::BF16), vb, out, false, false, 1.f, 0.f);
  out = out.view({B, H, N, D});
  if (!needs_grad({&q, &k, &v})) return out;

  const Shape qs = q.shape(), ks = k.shape();
  record("scaled_dot_product_attention", out, {q, k, v},
         [=](const Tensor& g) -> std::vector<Tensor> {
           Backend& bg = backend_for(g);
           const Device dev = g.device();
           Tensor gb = detail::contiguous_as(g, DType::BF16).view({BH, N, D});
           Tensor dprob = Tensor::empty({BH, N, Nk}, DType::F32, dev);
           bg.gemm(gb, vb, dprob, false, true, 1.f, 0.f);
           Tensor gv = Tensor::empty({BH, Nk, D}, DType::F32, dev);
           bg.gemm(prob.to(DType::BF16), gb, gv, true, false, 1.f, 0.f);
           Tensor ds = Tensor::empty({BH, N, Nk}, DType::F32, dev);
           bg.softmax_backward(prob, dprob, ds, false);
           dprob = Tensor();
           Tensor dsb = ds.to(DType::BF16);
           ds = Tensor();
           Tensor gq = Tensor::empty({BH, N, D}, DType::F32, dev);
           bg.gemm(dsb, kb, gq, false, false, scale, 0.f);
           Tensor gk = Tensor::empty({BH, Nk, D}, DType::F32, dev);
           bg.gemm(dsb, qb, gk, true, false, scale, 0.f);
           return {gq.view(qs), gk.view(ks), gv.view(ks)};
         });
  return out;
}

}  // namespace

Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v,
                                    float scale) {
  const char* op = "scaled_dot_product_attention";
  detail::check_pair(op, q, k);
  detail::check_pair(op, q, v);
  MOKD_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op,
             ": q, k, v must be [B, H, N, D], got q ", q.str(), ", k ", k.str(), ", v ", v.str());
  MOKD_CHECK(k.size(0) == q.size(0) && v.size(0) == q.size(0) && k.size(1) == q.size(1) &&
                 v.size(1) == q.size(1),
             op, ": batch and head dims differ: q ", q.str(), ", k ", k.str(), ", v ", v.str());
  MOKD_CHECK(k.size(3) == q.size(3) && v.size(3) == q.size(3), op,
             ": head dims D differ: q ", q.str(), ", k ", k.str(), ", v ", v.str());
  MOKD_CHECK(k.size(2) == v.size(2), op, ": k ", k.str(), " and v ", v.str(),
             " must have the same number of tokens");

  if (matmul_precision() == MatmulPrecision::BF16 && q.dtype() == DType::F32)
    return attention_bf16_products(q, k, v, scale);

  Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  Tensor out = detail::empty_like(qc);
  Tensor lse = detail::empty_as(qc, {q.size(0), q.size(1), q.size(2)});
  Backend& be = backend_for(q);
  be.attention(qc, kc, vc, scale, out, lse);
  if (!needs_grad({&q, &k, &v})) return out;

  // Saves the inputs, the output and the per-row log-sum-exp (not the N x N probabilities).
  Tensor sq = qc.detach(), sk = kc.detach(), sv = vc.detach(), so = out.detach();
  Tensor slse = lse;
  record(op, out, {q, k, v}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gq = detail::empty_like(sq), gk = detail::empty_like(sk), gv = detail::empty_like(sv);
    backend_for(sq).attention_backward(sq, sk, sv, so, slse, g.contiguous(), scale, gq, gk, gv);
    return {gq, gk, gv};
  });
  return out;
}

}  // namespace mokd
