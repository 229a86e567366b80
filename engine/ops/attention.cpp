// Scaled-dot-product attention over [B, H, N, D] (non-causal, any token count), and the same on a
// packed q/k/v projection (ViT blocks). One core computes it: the backend's fused kernel in f32,
// batched bf16 products around a softmax on bf16 scores (f32 math inside) under
// MatmulPrecision::BF16 or for bf16 inputs.
#include <array>
#include <memory>

#include "engine/ops/common.h"
#include "engine/precision.h"

namespace mokd {

namespace {

// Index i of dim d as a view without that dim (shares storage; no autograd).
Tensor select_view(const Tensor& t, int64_t d, int64_t i) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = t.storage();
  impl->dtype = t.dtype();
  impl->offset = t.offset_bytes() + static_cast<size_t>(i * t.strides()[d]) * dtype_size(t.dtype());
  for (int64_t k = 0; k < t.dim(); ++k) {
    if (k == d) continue;
    impl->shape.push_back(t.shape()[k]);
    impl->strides.push_back(t.strides()[k]);
  }
  return Tensor(impl);
}

// Forward on construction, gradients on demand. q, k, v may have any strides: each is copied
// once into a contiguous operand of the compute dtype, which is also what backward reads.
//  f32:  the backend's fused kernel; saves the operands, the output and the per-row log-sum-exp.
//  BF16: batched GEMMs with bf16 operands and f32 accumulation (tensor cores on the GPU) writing
//        bf16; softmax and its backward read and write bf16 with f32 math inside; saves the
//        operands and the B*H*N*Nk probabilities (bf16).
//          S = scale q k^T,  P = softmax(S),  out = P v
//          dP = g v^T,  dv = P^T g,  dS = P * (dP - rowsum(dP * P)),  dq = scale dS k,
//          dk = scale dS^T q
class AttentionCore {
 public:
  AttentionCore(const Tensor& q, const Tensor& k, const Tensor& v, float scale)
      : B_(q.size(0)),
        H_(q.size(1)),
        N_(q.size(2)),
        D_(q.size(3)),
        Nk_(k.size(2)),
        scale_(scale),
        bf16_(detail::product_dtype(q) == DType::BF16) {
    const DType dt = bf16_ ? DType::BF16 : q.dtype();
    q_ = detail::contiguous_as(q, dt);
    k_ = detail::contiguous_as(k, dt);
    v_ = detail::contiguous_as(v, dt);
    Backend& be = backend_for(q);
    if (!bf16_) {
      out = detail::empty_like(q_);
      lse_ = detail::empty_as(q_, {B_, H_, N_});
      be.attention(q_, k_, v_, scale_, out, lse_);
      return;
    }
    const int64_t BH = B_ * H_;
    const DType bf = DType::BF16;
    Tensor s = Tensor::empty({BH, N_, Nk_}, bf, q.device());
    be.gemm(q_.view({BH, N_, D_}), k_.view({BH, Nk_, D_}), s, false, true, scale_, 0.f);
    prob_ = Tensor::empty({BH, N_, Nk_}, bf, q.device());
    be.softmax(s, prob_, false);
    s = Tensor();  // the scores' memory goes back before the next product
    out = Tensor::empty({B_, H_, N_, D_}, bf, q.device());
    Tensor o3 = out.view({BH, N_, D_});
    be.gemm(prob_, v_.view({BH, Nk_, D_}), o3, false, false, 1.f, 0.f);
  }

  Tensor out;  // [B, H, N, D], contiguous, of the compute dtype

  // Gradients of q, k, v ([B, H, N, D] / [B, H, Nk, D], of the compute dtype) for the output's
  // gradient g (any strides).
  std::array<Tensor, 3> backward(const Tensor& g) const {
    Backend& be = backend_for(g);
    const Device dev = g.device();
    if (!bf16_) {
      Tensor gq = detail::empty_like(q_), gk = detail::empty_like(k_), gv = detail::empty_like(v_);
      be.attention_backward(q_, k_, v_, out, lse_, g.contiguous(), scale_, gq, gk, gv);
      return {gq, gk, gv};
    }
    const int64_t BH = B_ * H_;
    Tensor gb = detail::contiguous_as(g, DType::BF16).view({BH, N_, D_});
    Tensor qb = q_.view({BH, N_, D_}), kb = k_.view({BH, Nk_, D_}), vb = v_.view({BH, Nk_, D_});
    const DType bf = DType::BF16;
    Tensor dprob = Tensor::empty({BH, N_, Nk_}, bf, dev);
    be.gemm(gb, vb, dprob, false, true, 1.f, 0.f);
    Tensor gv = Tensor::empty({BH, Nk_, D_}, bf, dev);
    be.gemm(prob_, gb, gv, true, false, 1.f, 0.f);
    Tensor ds = Tensor::empty({BH, N_, Nk_}, bf, dev);
    be.softmax_backward(prob_, dprob, ds, false);
    dprob = Tensor();
    Tensor gq = Tensor::empty({BH, N_, D_}, bf, dev);
    be.gemm(ds, kb, gq, false, false, scale_, 0.f);
    Tensor gk = Tensor::empty({BH, Nk_, D_}, bf, dev);
    be.gemm(ds, qb, gk, true, false, scale_, 0.f);
    return {gq.view({B_, H_, N_, D_}), gk.view({B_, H_, Nk_, D_}), gv.view({B_, H_, Nk_, D_})};
  }

  // What backward reads, as detached handles (autograd captures must not hold graph history).
  // The bf16 path's backward never reads the output: its handle goes, so the caller's copy is
  // the only one kept alive.
  void detach_saved() {
    q_ = q_.detach();
    k_ = k_.detach();
    v_ = v_.detach();
    out = bf16_ ? Tensor() : out.detach();
  }

 private:
  int64_t B_, H_, N_, D_, Nk_;
  float scale_;
  bool bf16_;
  Tensor q_, k_, v_, lse_, prob_;
};

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
  MOKD_CHECK(k.size(3) == q.size(3) && v.size(3) == q.size(3), op, ": head dims D differ: q ",
             q.str(), ", k ", k.str(), ", v ", v.str());
  MOKD_CHECK(k.size(2) == v.size(2), op, ": k ", k.str(), " and v ", v.str(),
             " must have the same number of tokens");

  auto core = std::make_shared<AttentionCore>(q, k, v, scale);
  Tensor out = core->out;
  if (!needs_grad({&q, &k, &v})) return out;
  core->detach_saved();
  record(op, out, {q, k, v}, [core](const Tensor& g) -> std::vector<Tensor> {
    auto [gq, gk, gv] = core->backward(g);
    return {gq, gk, gv};
  });
  return out;
}

Tensor self_attention_packed(const Tensor& qkv, int64_t heads, float scale) {
  const char* op = "self_attention_packed";
  detail::check_float(op, qkv, "qkv");
  MOKD_CHECK(qkv.dim() == 3 && heads > 0 && qkv.size(2) % (3 * heads) == 0, op,
             ": qkv must be [B, N, 3 * heads * head_dim] with heads ", heads, ", got ", qkv.str());
  const int64_t B = qkv.size(0), N = qkv.size(1), H = heads, Dh = qkv.size(2) / (3 * heads);
  // [B, N, 3, H, Dh] -> [3, B, H, N, Dh]: q, k, v are strided views (no copy here); the core
  // copies each once, straight into its compute dtype.
  Tensor parts = qkv.contiguous().view({B, N, 3, H, Dh}).permute_view({2, 0, 3, 1, 4});
  auto part = [&](int64_t i) { return select_view(parts, 0, i); };
  auto core = std::make_shared<AttentionCore>(part(0), part(1), part(2), scale);
  // Heads merged back: out [B, N, H, Dh] written through a [B, H, N, Dh] view.
  Tensor out = detail::empty_as(core->out, {B, N, H, Dh});
  out.permute_view({0, 2, 1, 3}).copy_(core->out);
  out = out.view({B, N, H * Dh});
  if (!needs_grad({&qkv})) return out;
  core->detach_saved();
  record(op, out, {qkv}, [=](const Tensor& g) -> std::vector<Tensor> {
    // g [B, N, H*Dh] seen as [B, H, N, Dh]; the core copies it once into its operand dtype.
    auto grads = core->backward(g.contiguous().view({B, N, H, Dh}).permute_view({0, 2, 1, 3}));
    // Each gradient lands in its third of gqkv [B, N, 3, H, Dh]: three copies, no zero fill.
    Tensor gqkv = Tensor::empty({B, N, 3, H, Dh}, g.dtype(), g.device());
    Tensor gparts = gqkv.permute_view({2, 0, 3, 1, 4});
    for (int64_t i = 0; i < 3; ++i) {
      Tensor dst = select_view(gparts, 0, i);
      dst.copy_(grads[i]);
    }
    return {gqkv.view({B, N, 3 * H * Dh})};
  });
  return out;
}

}  // namespace mokd
