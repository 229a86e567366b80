// Scaled-dot-product attention over [B, H, N, D] (non-causal, any token count).
#include "engine/ops/common.h"

namespace mokd {

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
