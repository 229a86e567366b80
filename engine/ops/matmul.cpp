// Matrix products: batched matmul (with a shared rank-2 right operand) and linear layers.
#include "engine/ops/common.h"
#include "engine/precision.h"

namespace mokd {

namespace {

int64_t prod(const Shape& s, size_t begin, size_t end) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) p *= s[i];
  return p;
}

// The contiguous operand of a product in its compute dtype (detail::product_dtype): one pass,
// none for an operand already stored so (a bf16 activation).
Tensor operand(const Tensor& t, DType dt) { return detail::product_operand(t, dt); }

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  // A bf16 activation may meet an f32 parameter: both are bf16 operands in the product.
  if (!detail::bf16_with_f32(a, b) || a.device() != b.device()) detail::check_pair("matmul", a, b);
  MOKD_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: operands need rank >= 2, got a ", a.str(),
             " and b ", b.str());
  const Shape& as = a.shape();
  const Shape& bs = b.shape();
  const size_t ra = as.size(), rb = bs.size();
  const int64_t M = as[ra - 2], K = as[ra - 1], N = bs[rb - 1];
  MOKD_CHECK(bs[rb - 2] == K, "matmul: inner dimensions differ: a ", a.str(), " is [.., M, ", K,
             "] but b ", b.str(), " is [.., ", bs[rb - 2], ", N]");
  const bool shared_b = rb == 2;
  MOKD_CHECK(shared_b || (ra == rb && std::equal(as.begin(), as.end() - 2, bs.begin())),
             "matmul: leading (batch) dims of a ", a.str(), " and b ", b.str(),
             " must be equal, or b must have rank 2");

  Shape out_shape(as.begin(), as.end() - 2);
  out_shape.push_back(M);
  out_shape.push_back(N);
  // Products compute (and write) in bf16 in the bf16 mode or for a bf16 operand.
  const DType dt = a.dtype() == DType::BF16 ? DType::BF16 : detail::product_dtype(b);
  Tensor ac = operand(a, dt), bc = operand(b, dt);
  const int64_t batch = prod(as, 0, ra - 2);
  // A shared b turns the batch into rows of one big rank-2 product; otherwise rank-3 batched.
  Tensor a3 = shared_b ? ac.view({batch * M, K}) : ac.view({batch, M, K});
  Tensor b3 = shared_b ? bc : bc.view({batch, K, N});
  Shape c_shape = shared_b ? Shape{batch * M, N} : Shape{batch, M, N};
  Tensor out = Tensor::empty(c_shape, dt, a.device());
  backend_for(a).gemm(a3, b3, out, false, false, 1.f, 0.f);
  out = out.view(out_shape);
  if (!needs_grad({&a, &b})) return out;

  Tensor sa = a3.detach(), sb = b3.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  const Shape a_shape = as, b_shape = bs;
  // Each gradient is written in its input's dtype: bf16 for an activation, f32 for a parameter.
  const DType a_dt = a.dtype(), b_dt = b.dtype();
  record("matmul", out, {a, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor g3 = operand(g, dt).view(c_shape);
    Tensor ga, gb;
    if (need_a) {  // ga = g b^T
      ga = Tensor::empty(sa.shape(), a_dt == DType::F32 ? DType::F32 : dt, g.device());
      backend_for(g3).gemm(g3, sb, ga, false, true, 1.f, 0.f);
      ga = ga.view(a_shape);
    }
    if (need_b) {  // gb = a^T g (for a shared b, the flattened rows sum over the batch)
      gb = Tensor::empty(sb.shape(), b_dt == DType::F32 ? DType::F32 : dt, g.device());
      backend_for(g3).gemm(sa, g3, gb, true, false, 1.f, 0.f);
      gb = gb.view(b_shape);
    }
    return {ga, gb};
  });
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  if (!(x.defined() && w.defined() && detail::fits_activation(x, w)))
    detail::check_pair("linear", x, w);
  MOKD_CHECK(w.dim() == 2, "linear: weight must be [out, in], got w ", w.str(), " for x ", x.str());
  MOKD_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input features differ: x ", x.str(),
             " is [.., ", x.dim() >= 1 ? x.size(-1) : 0, "] but w ", w.str(), " is [out, ",
             w.size(1), "]");
  const bool has_bias = b.defined();
  if (has_bias) {
    if (!detail::fits_activation(x, b)) detail::check_pair("linear", x, b);
    MOKD_CHECK(b.dim() == 1 && b.size(0) == w.size(0), "linear: bias ", b.str(), " must be [",
               w.size(0), "] for w ", w.str());
  }
  const int64_t in = w.size(1), outf = w.size(0);
  const int64_t rows = prod(x.shape(), 0, x.shape().size() - 1);
  Shape out_shape = x.shape();
  out_shape.back() = outf;

  // Products compute (and write) in bf16 in the bf16 mode or for a bf16 input; the bias is read
  // as bf16 too (its copy, as PyTorch's autocast rounds it) and joins the f32 accumulator.
  const DType dt = detail::product_dtype(x);
  Tensor x2 = operand(x, dt).view({rows, in});
  Tensor wc = operand(w, dt);
  Tensor out = Tensor::empty({rows, outf}, dt, x.device());
  Backend& be = backend_for(x);
  if (has_bias) {
    be.gemm_bias(x2, wc, operand(b, dt), out);
  } else {
    be.gemm(x2, wc, out, false, true, 1.f, 0.f);
  }
  out = out.view(out_shape);
  if (!needs_grad({&x, &w, &b})) return out;

  Tensor sx = x2.detach(), sw = wc.detach();
  const bool need_x = x.requires_grad(), need_w = w.requires_grad();
  const bool need_b = has_bias && b.requires_grad();
  const Shape x_shape = x.shape();
  // Gradients in their inputs' dtypes: bf16 for a bf16 activation, f32 for the parameters.
  const DType x_dt = x.dtype() == DType::F32 ? DType::F32 : dt, w_dt = w.dtype();
  const DType b_dt = has_bias ? b.dtype() : DType::F32;
  record("linear", out, {x, w, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor g2 = g.contiguous().view({rows, outf});
    Tensor g2p = operand(g2, dt);  // the products' operand; the bias gradient sums g2 in f32
    Backend& bk = backend_for(g2);
    Tensor gx, gw, gb;
    if (need_x) {  // gx = g w
      gx = Tensor::empty({rows, in}, x_dt, g.device());
      bk.gemm(g2p, sw, gx, false, false, 1.f, 0.f);
      gx = gx.view(x_shape);
    }
    if (need_w) {  // gw = g^T x
      gw = Tensor::empty({outf, in}, w_dt == DType::F32 ? DType::F32 : dt, g.device());
      bk.gemm(g2p, sx, gw, true, false, 1.f, 0.f);
    }
    if (need_b) {  // gb = sum of g over rows
      gb = Tensor::empty({1, outf}, b_dt, g.device());
      if (rows == 0)
        gb.fill_(0.0);
      else
        bk.reduce_sum(g2, gb, 1.f);
      gb = gb.view({outf});
    }
    return {gx, gw, gb};
  });
  return out;
}

Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& b) {
  // Without a fused pass, the GEMM's bias epilogue (cuBLASLt's) beats a separate bias add.
  if (!b.defined() || !x.defined() || !backend_for(x).fuses_epilogues())
    return gelu(linear(x, w, b));
  return bias_gelu(linear(x, w, Tensor()), b);
}

}  // namespace mokd
