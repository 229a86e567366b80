// Elementwise ops: unary maps and broadcasting binary arithmetic, with their gradients.
#include "engine/ops/common.h"

#include "engine/kernel_costs.h"

namespace mokd {

using detail::empty_like;

namespace {

Shape broadcast_shapes(const char* op, const Shape& a, const Shape& b) {
  size_t r = std::max(a.size(), b.size());
  Shape out(r);
  for (size_t i = 0; i < r; ++i) {
    int64_t da = i < r - a.size() ? 1 : a[i - (r - a.size())];
    int64_t db = i < r - b.size() ? 1 : b[i - (r - b.size())];
    MOKD_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
               " cannot be broadcast together");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

// A bf16 activation with an f32 operand (a parameter, a mask) gives a bf16 result: the kernel
// reads the f32 operand as it is. An f32 first operand with a bf16 second is swapped (add, mul)
// or rounded to bf16 (sub, div).
Tensor binary_op(BinaryOp kind, const char* name, const Tensor& a, const Tensor& b) {
  const bool mixed = detail::bf16_with_f32(a, b);
  if (!mixed) detail::check_pair(name, a, b);
  MOKD_CHECK(a.device() == b.device(), name, ": operands on different devices: ", a.str(), " and ",
             b.str());
  if (mixed && a.dtype() == DType::F32) {
    if (kind == BinaryOp::Add || kind == BinaryOp::Mul) return binary_op(kind, name, b, a);
    return binary_op(kind, name, cast(a, DType::BF16), b);
  }
  Shape s = broadcast_shapes(name, a.shape(), b.shape());
  Tensor out = Tensor::empty(s, a.dtype(), a.device());
  backend_for(a).binary(kind, a.expand_view(s), b.expand_view(s), out);
  if (!needs_grad({&a, &b})) return out;
  Tensor sa = a.detach(), sb = b.detach();
  Shape as = a.shape(), bs = b.shape();
  bool ga_needed = a.requires_grad(), gb_needed = b.requires_grad();
  const DType bt = b.dtype();  // an f32 b (a parameter) gets its reduced gradient in f32
  record(name, out, {a, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor ga, gb;
    switch (kind) {
      case BinaryOp::Add:
        if (ga_needed) ga = sum_to_shape(g, as);
        if (gb_needed) gb = sum_to_shape(g, bs, bt);
        break;
      case BinaryOp::Sub:
        if (ga_needed) ga = sum_to_shape(g, as);
        if (gb_needed) gb = neg(sum_to_shape(g, bs, bt));
        break;
      case BinaryOp::Mul:
        if (ga_needed) ga = sum_to_shape(mul(g, sb), as);
        if (gb_needed) gb = sum_to_shape(mul(g, sa), bs, bt);
        break;
      case BinaryOp::Div:
        if (ga_needed) ga = sum_to_shape(div(g, sb), as);
        if (gb_needed) gb = sum_to_shape(neg(div(mul(g, sa), mul(sb, sb))), bs, bt);
        break;
    }
    return {ga, gb};
  });
  return out;
}

Tensor unary_op(UnaryOp op, const Tensor& x, float alpha) {
  detail::check_float(unary_name(op), x);
  Tensor xc = x.contiguous();
  Tensor out = empty_like(xc);
  backend_for(x).unary(op, xc, out, alpha);
  if (!needs_grad({&x})) return out;
  Tensor saved = xc.detach();
  record(unary_name(op), out, {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gin = empty_like(saved);
    backend_for(saved).unary_backward(op, saved, g.contiguous(), gin, alpha);
    return {gin};
  });
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Add, "add", a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Sub, "sub", a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Mul, "mul", a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary_op(BinaryOp::Div, "div", a, b); }
Tensor scale(const Tensor& x, float alpha) { return unary_op(UnaryOp::Scale, x, alpha); }
Tensor add_scalar(const Tensor& x, float alpha) { return unary_op(UnaryOp::AddScalar, x, alpha); }
Tensor neg(const Tensor& x) { return unary_op(UnaryOp::Neg, x, 0.f); }
Tensor exp(const Tensor& x) { return unary_op(UnaryOp::Exp, x, 0.f); }
Tensor log(const Tensor& x) { return unary_op(UnaryOp::Log, x, 0.f); }
Tensor sqrt(const Tensor& x) { return unary_op(UnaryOp::Sqrt, x, 0.f); }
Tensor square(const Tensor& x) { return unary_op(UnaryOp::Square, x, 0.f); }
Tensor abs(const Tensor& x) { return unary_op(UnaryOp::Abs, x, 0.f); }
Tensor relu(const Tensor& x) { return unary_op(UnaryOp::Relu, x, 0.f); }
Tensor gelu(const Tensor& x) { return unary_op(UnaryOp::Gelu, x, 0.f); }

Tensor bias_gelu(const Tensor& x, const Tensor& bias) {
  const char* op = "bias_gelu";
  detail::check_float(op, x, "x");
  MOKD_CHECK(bias.defined() && bias.device() == x.device() && detail::fits_activation(x, bias), op,
             ": bias ", bias.defined() ? bias.str() : std::string("undefined"),
             " must be of x's dtype (or f32) on x's device, x ", x.str());
  MOKD_CHECK(x.dim() >= 1 && bias.dim() == 1 && bias.size(0) == x.size(-1), op, ": bias ",
             bias.str(), " must be [", x.dim() >= 1 ? x.size(-1) : 0, "] for x ", x.str());
  Tensor xc = x.contiguous(), bc = detail::contiguous_as(bias, DType::F32);
  Tensor y = empty_like(xc);
  backend_for(x).bias_gelu(xc, bc, y);
  if (!needs_grad({&x, &bias})) return y;
  // x (before the bias) is kept, not x + bias: backward adds the bias again, in registers.
  Tensor xs = xc.detach(), bs = bc.detach();
  const bool gx_needed = x.requires_grad(), gb_needed = bias.requires_grad();
  record(op, y, {x, bias}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = empty_like(xs);
    Tensor gb = gb_needed ? Tensor::empty({xs.size(-1)}, DType::F32, xs.device()) : Tensor();
    backend_for(xs).bias_gelu_backward(detail::contiguous_as(g, xs.dtype()), xs, bs, gx,
                                       gb_needed ? &gb : nullptr);
    return {gx_needed ? gx : Tensor(), gb};
  });
  return y;
}

Tensor smooth_l1_elementwise(const Tensor& d, float beta) {  // used by loss.cpp
  MOKD_CHECK(beta > 0.f, "smooth_l1: beta must be > 0, got ", beta);
  return unary_op(UnaryOp::SmoothL1, d, beta);
}

void uniform_(Tensor& t, float lo, float hi, Generator& gen) {
  MOKD_CHECK(lo <= hi, "uniform_: lo ", lo, " > hi ", hi);
  drop_bf16_copy(t);  // new values
  note_kernel("fill_uniform", {}, {&t});
  backend_for(t).fill_uniform(t, lo, hi, gen.next(t.numel()));
}

void normal_(Tensor& t, float mean, float std, Generator& gen) {
  MOKD_CHECK(std >= 0.f, "normal_: std must be >= 0, got ", std);
  drop_bf16_copy(t);  // new values
  note_kernel("fill_normal", {}, {&t});
  backend_for(t).fill_normal(t, mean, std, gen.next(t.numel()));
}

}  // namespace mokd
