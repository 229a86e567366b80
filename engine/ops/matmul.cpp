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

// Under MatmulPrecision::BF16 the operands of every product are rounded to bf16
// (engine/precision.h).
bool bf16_products() { return matmul_precision() == MatmulPrecision::BF16; }
// The contiguous operand of a product: one pass, rounding to bf16 under BF16.
Tensor operand(const Tensor& t, bool bf16) {
  return detail::contiguous_as(t, bf16 ? DType::BF16 : t.dtype());
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  detail::check_pair("matmul", a, b);
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
  const bool bf16 = bf16_products();
  Tensor ac = operand(a, bf16), bc = operand(b, bf16);
  const int64_t batch = prod(as, 0, ra - 2);
  // A shared b turns the batch into rows of one big rank-2 product; otherwise rank-3 batched.
  Tensor a3 = shared_b ? ac.view({batch * M, K}) : ac.view({batch, M, K});
  Tensor b3 = shared_b ? bc : bc.view({batch, K, N});
  Shape c_shape = shared_b ? Shape{batch * M, N} : Shape{batch, M, N};
  Tensor out = detail::empty_as(a, c_shape);
  backend_for(a).gemm(a3, b3, out, false, false, 1.f, 0.f);
  out = out.view(out_shape);
  if (!needs_grad({&a, &b})) return out;

  Tensor sa = a3.detach(), sb = b3.detach();
  const bool need_a = a.requires_grad(), need_b = b.requires_grad();
  const Shape a_shape = as, b_shape = bs;
  record("matmul", out, {a, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor g3 = operand(g, bf16).view(c_shape);
    Tensor ga, gb;
    if (need_a) {  // ga = g b^T
      ga = detail::empty_as(g, sa.shape());
      backend_for(g3).gemm(g3, sb, ga, false, true, 1.f, 0.f);
      ga = ga.view(a_shape);
    }
    if (need_b) {  // gb = a^T g (for a shared b, the flattened rows sum over the batch)
      gb = detail::empty_as(g, sb.shape());
      backend_for(g3).gemm(sa, g3, gb, true, false, 1.f, 0.f);
      gb = gb.view(b_shape);
    }
    return {ga, gb};
  });
  return out;
}

Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) {
  detail::check_pair("linear", x, w);
  MOKD_CHECK(w.dim() == 2, "linear: weight must be [out, in], got w ", w.str(), " for x ", x.str());
  MOKD_CHECK(x.dim() >= 1 && x.size(-1) == w.size(1), "linear: input features differ: x ", x.str(),
             " is [.., ", x.dim() >= 1 ? x.size(-1) : 0, "] but w ", w.str(), " is [out, ",
             w.size(1), "]");
  const bool has_bias = b.defined();
  if (has_bias) {
    detail::check_pair("linear", x, b);
    MOKD_CHECK(b.dim() == 1 && b.size(0) == w.size(0), "linear: bias ", b.str(), " must be [",
               w.size(0), "] for w ", w.str());
  }
  const int64_t in = w.size(1), outf = w.size(0);
  const int64_t rows = prod(x.shape(), 0, x.shape().size() - 1);
  Shape out_shape = x.shape();
  out_shape.back() = outf;

  const bool bf16 = bf16_products();
  Tensor x2 = operand(x, bf16).view({rows, in});
  Tensor wc = operand(w, bf16);
  Tensor out = detail::empty_as(x, {rows, outf});
  Backend& be = backend_for(x);
  if (has_bias) {
    be.gemm_bias(x2, wc, b.contiguous(), out);
  } else {
    be.gemm(x2, wc, out, false, true, 1.f, 0.f);
  }
  out = out.view(out_shape);
  if (!needs_grad({&x, &w, &b})) return out;

  Tensor sx = x2.detach(), sw = wc.detach();
  const bool need_x = x.requires_grad(), need_w = w.requires_grad();
  const bool need_b = has_bias && b.requires_grad();
  const Shape x_shape = x.shape();
  record("linear", out, {x, w, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor g2 = g.contiguous().view({rows, outf});
    Tensor g2p = operand(g2, bf16);  // the products' operand; the bias gradient sums g2 in f32
    Backend& bk = backend_for(g2);
    Tensor gx, gw, gb;
    if (need_x) {  // gx = g w
      gx = detail::empty_as(g2, {rows, in});
      bk.gemm(g2p, sw, gx, false, false, 1.f, 0.f);
      gx = gx.view(x_shape);
    }
    if (need_w) {  // gw = g^T x
      gw = detail::empty_as(g2, {outf, in});
      bk.gemm(g2p, sx, gw, true, false, 1.f, 0.f);
    }
    if (need_b) {  // gb = sum of g over rows
      gb = detail::empty_as(g2, {1, outf});
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

}  // namespace mokd
