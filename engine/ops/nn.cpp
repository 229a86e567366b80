// Softmax family, layer norm, dropout and drop-path ops with their gradients.
#include "engine/ops/common.h"

#include "engine/kernel_costs.h"

namespace mokd {

using detail::empty_like;

namespace {

// The permutation moving dim d to the end (others keep their order) and its inverse.
std::vector<int64_t> to_last_perm(int64_t d, int64_t rank) {
  std::vector<int64_t> p;
  for (int64_t i = 0; i < rank; ++i)
    if (i != d) p.push_back(i);
  p.push_back(d);
  return p;
}
std::vector<int64_t> inverse_perm(const std::vector<int64_t>& p) {
  std::vector<int64_t> inv(p.size());
  for (size_t i = 0; i < p.size(); ++i) inv[p[i]] = static_cast<int64_t>(i);
  return inv;
}

// Softmax / log-softmax over the last dim. Backward only needs the output.
Tensor softmax_lastdim(const Tensor& x, bool log) {
  const char* name = log ? "log_softmax" : "softmax";
  Tensor xc = x.contiguous();
  Tensor y = empty_like(xc);
  if (y.numel() > 0) backend_for(x).softmax(xc, y, log);
  if (!needs_grad({&x})) return y;
  Tensor saved = y.detach();
  record(name, y, {x}, [saved, log](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = empty_like(saved);
    if (gx.numel() > 0) backend_for(saved).softmax_backward(saved, g.contiguous(), gx, log);
    return {gx};
  });
  return y;
}

Tensor softmax_any(const char* name, const Tensor& x, int64_t dim, bool log) {
  detail::check_float(name, x);
  MOKD_CHECK(x.dim() >= 1, name, ": needs rank >= 1, got ", x.str());
  int64_t d = wrap_dim(dim, x.dim(), name);
  if (d == x.dim() - 1) return softmax_lastdim(x, log);
  // permute() records its own gradient, so the composition is differentiable as is.
  auto p = to_last_perm(d, x.dim());
  return permute(softmax_lastdim(permute(x, p), log), inverse_perm(p));
}

// logsumexp over the last dim: [.., C] -> [..].
Tensor logsumexp_lastdim(const Tensor& x) {
  Tensor xc = x.contiguous();
  Shape os(x.shape().begin(), x.shape().end() - 1);
  Tensor out = detail::empty_as(xc, os);
  if (out.numel() > 0) backend_for(x).logsumexp(xc, out);
  if (!needs_grad({&x})) return out;
  Tensor sx = xc.detach(), so = out.detach();
  Shape keep = x.shape();
  keep.back() = 1;
  record("logsumexp", out, {x}, [sx, so, keep](const Tensor& g) -> std::vector<Tensor> {
    // d lse / dx = softmax(x) = exp(x - lse); the saved tensors carry no history, so these ops
    // record nothing.
    Tensor sm = exp(sub(sx, so.view(keep)));
    return {mul(sm, g.contiguous().view(keep))};
  });
  return out;
}

// The mask holds 0 or 1 / (1 - p) in f32 (for a bf16 activation too: mul() reads an f32 operand
// as it is, so the scale is not rounded before it multiplies).
Tensor bernoulli_mask(const Shape& shape, float p, Generator& gen, const Tensor& like) {
  const DType dt = like.dtype() == DType::BF16 ? DType::F32 : like.dtype();
  Tensor mask = Tensor::empty(shape, dt, like.device());
  // The mask is a pure function of (seed, counter): the same Generator state gives the same mask
  // on every backend.
  note_kernel("bernoulli_scaled", {}, {&mask});
  backend_for(like).bernoulli_scaled(mask, 1.f - p, gen.next(static_cast<uint64_t>(mask.numel())));
  return mask;
}

void check_drop_p(const char* name, float p) {
  MOKD_CHECK(p >= 0.f && p < 1.f, name, ": p must be in [0, 1), got ", p);
}

}  // namespace

Tensor softmax(const Tensor& x, int64_t dim) { return softmax_any("softmax", x, dim, false); }
Tensor log_softmax(const Tensor& x, int64_t dim) {
  return softmax_any("log_softmax", x, dim, true);
}

Tensor logsumexp(const Tensor& x_in, int64_t dim, bool keepdim) {
  detail::check_float("logsumexp", x_in);
  const Tensor x = cast(x_in, x_in.dtype() == DType::BF16 ? DType::F32 : x_in.dtype());  // f32
  MOKD_CHECK(x.dim() >= 1, "logsumexp: needs rank >= 1, got ", x.str());
  int64_t d = wrap_dim(dim, x.dim(), "logsumexp");
  Tensor out = d == x.dim() - 1 ? logsumexp_lastdim(x)
                                : logsumexp_lastdim(permute(x, to_last_perm(d, x.dim())));
  // out has x's shape without dim d, in x's order.
  if (!keepdim) return out;
  Shape ks = x.shape();
  ks[d] = 1;
  return reshape(out, ks);
}

Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) {
  detail::check_float("layer_norm", x);
  MOKD_CHECK(x.dim() >= 1, "layer_norm: input must have rank >= 1, got ", x.str());
  MOKD_CHECK(eps >= 0.f, "layer_norm: eps must be >= 0, got ", eps);
  int64_t dn = x.size(-1);
  for (const auto& [t, arg] : {std::pair<const Tensor*, const char*>{&w, "weight"}, {&b, "bias"}}) {
    if (!t->defined()) continue;
    MOKD_CHECK(t->shape() == Shape{dn}, "layer_norm: ", arg, " ", t->str(), " must have shape [",
               dn, "] for input ", x.str());
    MOKD_CHECK(detail::fits_activation(x, *t) && t->device() == x.device(), "layer_norm: ", arg,
               " ", t->str(), " must match the input's dtype and device, ", x.str());
  }
  Tensor xc = x.contiguous();
  Tensor wc = w.defined() ? w.contiguous() : Tensor(), bc = b.defined() ? b.contiguous() : Tensor();
  int64_t rows = dn ? x.numel() / dn : 0;
  Tensor y = empty_like(xc);
  // Row statistics are f32 whatever the activations' dtype (so are the parameters' gradients).
  Tensor mu = Tensor::empty({rows}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({rows}, DType::F32, x.device());
  if (y.numel() > 0)
    backend_for(x).layer_norm(xc, wc.defined() ? &wc : nullptr, bc.defined() ? &bc : nullptr, eps,
                              y, mu, rstd);
  if (!needs_grad({&x, &w, &b})) return y;
  Tensor sx = xc.detach(), sw = wc.defined() ? wc.detach() : Tensor();
  bool has_b = b.defined();
  const DType b_dt = has_b ? b.dtype() : DType::F32;
  record("layer_norm", y, {x, w, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = empty_like(sx);
    Tensor gw = sw.defined() ? empty_like(sw) : Tensor();
    Tensor gb = has_b ? Tensor::empty({sx.size(-1)}, b_dt, sx.device()) : Tensor();
    if (gx.numel() == 0) {
      if (gw.defined()) gw.fill_(0.0);
      if (gb.defined()) gb.fill_(0.0);
    } else {
      backend_for(sx).layer_norm_backward(g.contiguous(), sx, sw.defined() ? &sw : nullptr, mu,
                                          rstd, gx, gw.defined() ? &gw : nullptr,
                                          gb.defined() ? &gb : nullptr);
    }
    return {gx, gw, gb};
  });
  return y;
}

AddLayerNorm add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& w,
                            const Tensor& b, float eps) {
  const char* op = "add_layer_norm";
  detail::check_float(op, x, "x");
  detail::check_float(op, residual, "residual");
  MOKD_CHECK(residual.shape() == x.shape() && residual.device() == x.device(), op, ": residual ",
             residual.str(), " must have x's shape and device, x ", x.str());
  if (residual.dtype() != x.dtype()) {  // a mixed add (bf16 with f32): the composition
    Tensor s = add(x, residual);
    return {s, layer_norm(s, w, b, eps)};
  }
  MOKD_CHECK(x.dim() >= 1, op, ": input must have rank >= 1, got ", x.str());
  MOKD_CHECK(eps >= 0.f, op, ": eps must be >= 0, got ", eps);
  const int64_t dn = x.size(-1);
  for (const auto& [t, arg] : {std::pair<const Tensor*, const char*>{&w, "weight"}, {&b, "bias"}}) {
    if (!t->defined()) continue;
    MOKD_CHECK(t->shape() == Shape{dn}, op, ": ", arg, " ", t->str(), " must have shape [", dn,
               "] for input ", x.str());
    MOKD_CHECK(detail::fits_activation(x, *t) && t->device() == x.device(), op, ": ", arg, " ",
               t->str(), " must match the input's dtype and device, ", x.str());
  }
  Tensor xc = x.contiguous(), rc = residual.contiguous();
  Tensor wc = w.defined() ? w.contiguous() : Tensor(), bc = b.defined() ? b.contiguous() : Tensor();
  const int64_t rows = dn ? x.numel() / dn : 0;
  AddLayerNorm out{empty_like(xc), empty_like(xc)};
  Tensor mu = Tensor::empty({rows}, DType::F32, x.device());
  Tensor rstd = Tensor::empty({rows}, DType::F32, x.device());
  Backend& be = backend_for(x);
  if (out.s.numel() > 0)
    be.add_layer_norm(xc, rc, wc.defined() ? &wc : nullptr, bc.defined() ? &bc : nullptr, eps,
                      out.s, out.n, mu, rstd);
  if (!needs_grad({&x, &residual, &w, &b})) return out;

  // Two outputs on a tape of one-output nodes: s's and n's nodes only hand their gradients to a
  // shared slot and pass an empty one on to a third node, which the tape runs after both (and
  // after everything that read s or n), and which does the one fused backward pass.
  struct Grads {
    Tensor gs, gn;
  };
  auto slot = std::make_shared<Grads>();
  Tensor ss = out.s.detach(), sw = wc.defined() ? wc.detach() : Tensor();
  const bool gx_needed = x.requires_grad(), gr_needed = residual.requires_grad();
  const bool gw_needed = w.defined() && w.requires_grad(),
             gb_needed = b.defined() && b.requires_grad();
  const DType w_dt = w.defined() ? w.dtype() : DType::F32,
              b_dt = b.defined() ? b.dtype() : DType::F32;
  Tensor joint = Tensor::empty({0}, DType::F32, x.device());
  record(op, joint, {x, residual, w, b}, [=](const Tensor&) -> std::vector<Tensor> {
    Tensor gs = slot->gs, gn = slot->gn;
    *slot = Grads{};  // a retained graph's next backward fills it again
    if (gs.defined()) gs = detail::contiguous_as(gs, ss.dtype());
    Tensor gx, gw, gb;
    if (!gn.defined()) {  // only s was used: add's backward
      gx = gs;
    } else {
      gx = empty_like(ss);
      if (gw_needed) gw = Tensor::empty({dn}, w_dt, ss.device());
      if (gb_needed) gb = Tensor::empty({dn}, b_dt, ss.device());
      backend_for(ss).add_layer_norm_backward(
          detail::contiguous_as(gn, ss.dtype()), gs.defined() ? &gs : nullptr, ss,
          sw.defined() ? &sw : nullptr, mu, rstd, gx, gw.defined() ? &gw : nullptr,
          gb.defined() ? &gb : nullptr);
    }
    return {gx_needed ? gx : Tensor(), gr_needed ? gx : Tensor(), gw, gb};
  });
  auto hand_over = [slot, dev = x.device()](Tensor Grads::*which) {
    return [slot, dev, which](const Tensor& g) -> std::vector<Tensor> {
      (*slot).*which = g;
      return {Tensor::empty({0}, DType::F32, dev)};
    };
  };
  record("add_layer_norm.s", out.s, {joint}, hand_over(&Grads::gs));
  record("add_layer_norm.n", out.n, {joint}, hand_over(&Grads::gn));
  return out;
}

Tensor dropout(const Tensor& x, float p, bool training, Generator& gen) {
  check_drop_p("dropout", p);
  detail::check_float("dropout", x);
  if (!training || p == 0.f) return x;
  // A constant mask: mul() gives the gradient grad * mask.
  return mul(x, bernoulli_mask(x.shape(), p, gen, x));
}

Tensor drop_path(const Tensor& x, float p, bool training, Generator& gen) {
  check_drop_p("drop_path", p);
  detail::check_float("drop_path", x);
  MOKD_CHECK(x.dim() >= 1, "drop_path: input must have a batch dim, got ", x.str());
  if (!training || p == 0.f) return x;
  // One draw per sample, [B, 1, .., 1], broadcast over the rest by mul().
  Shape ms(x.dim(), 1);
  ms[0] = x.size(0);
  return mul(x, bernoulli_mask(ms, p, gen, x));
}

}  // namespace mokd
