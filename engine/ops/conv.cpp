// NHWC convolution, batch norm and pooling ops with their gradients.
#include <algorithm>

#include "engine/ops/common.h"
#include "engine/precision.h"

namespace mokd {

using detail::empty_as;
using detail::empty_like;

namespace {

// x and a companion tensor (weight, bias, running stat) share device and dtype (or the companion
// is an f32 parameter of a bf16 activation).
void check_same(const char* op, const Tensor& x, const Tensor& t, const char* arg) {
  MOKD_CHECK(t.defined(), op, ": ", arg, " is undefined (x ", x.str(), ")");
  MOKD_CHECK(t.device() == x.device(), op, ": ", arg, " ", t.str(), " is on another device than x ",
             x.str());
  MOKD_CHECK(detail::fits_activation(x, t), op, ": ", arg, " ", t.str(),
             " has another dtype than x ", x.str());
}

void check_per_channel(const char* op, const Tensor& x, const Tensor& t, const char* arg) {
  check_same(op, x, t, arg);
  MOKD_CHECK(t.dim() == 1 && t.size(0) == x.size(3), op, ": ", arg, " ", t.str(), " must be [",
             x.size(3), "] for x ", x.str());
}

// Output extent of a window sweep in floor mode (>= 1 once the kernel fits the padded input).
int64_t out_extent(int64_t in, int64_t k, int64_t stride, int64_t pad) {
  return (in + 2 * pad - k) / stride + 1;
}

// [rows, C] -> [C]: per-channel sum through the backend (device-independent), stored as dt.
Tensor channel_sum(const Tensor& g, DType dt) {
  int64_t C = g.size(-1);
  Tensor gc = g.contiguous();
  Tensor out = Tensor::empty({1, C}, dt, gc.device());
  backend_for(gc).reduce_sum(gc.view({-1, C}), out, 1.f);
  return out.view({C});
}

void check_pool(const char* op, const Tensor& x, const Pool2dParams& p) {
  detail::check_float(op, x, "x");
  MOKD_CHECK(x.dim() == 4, op, ": x must be [N, H, W, C] (rank 4), got ", x.str());
  MOKD_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1 && p.stride_h >= 1 && p.stride_w >= 1 &&
                 p.pad_h >= 0 && p.pad_w >= 0,
             op, ": kernel ", p.kernel_h, "x", p.kernel_w, " and stride ", p.stride_h, "x",
             p.stride_w, " must be >= 1 and padding ", p.pad_h, "x", p.pad_w, " >= 0 for x ",
             x.str());
  // PyTorch's rule: every window then holds at least one real element.
  MOKD_CHECK(p.pad_h <= p.kernel_h / 2 && p.pad_w <= p.kernel_w / 2, op, ": padding ", p.pad_h, "x",
             p.pad_w, " must be at most half the kernel ", p.kernel_h, "x", p.kernel_w, " for x ",
             x.str());
  MOKD_CHECK(p.kernel_h <= x.size(1) + 2 * p.pad_h && p.kernel_w <= x.size(2) + 2 * p.pad_w, op,
             ": kernel ", p.kernel_h, "x", p.kernel_w, " is larger than the padded input of x ",
             x.str(), " (padding ", p.pad_h, "x", p.pad_w, ")");
}

Shape pool_out_shape(const Tensor& x, const Pool2dParams& p) {
  return {x.size(0), out_extent(x.size(1), p.kernel_h, p.stride_h, p.pad_h),
          out_extent(x.size(2), p.kernel_w, p.stride_w, p.pad_w), x.size(3)};
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) {
  const char* op = "conv2d";
  detail::check_float(op, x, "x");
  MOKD_CHECK(x.dim() == 4, op, ": x must be [N, H, W, C] (rank 4), got ", x.str());
  check_same(op, x, w, "weight");
  MOKD_CHECK(w.dim() == 4, op, ": weight must be [O, kh, kw, C/groups] (rank 4), got ", w.str(),
             " for x ", x.str());
  MOKD_CHECK(p.groups >= 1, op, ": groups must be >= 1, got ", p.groups);
  MOKD_CHECK(p.stride_h >= 1 && p.stride_w >= 1 && p.pad_h >= 0 && p.pad_w >= 0, op, ": stride ",
             p.stride_h, "x", p.stride_w, " must be >= 1 and padding ", p.pad_h, "x", p.pad_w,
             " >= 0");
  const int64_t C = x.size(3), O = w.size(0), kh = w.size(1), kw = w.size(2);
  MOKD_CHECK(w.size(3) * p.groups == C, op, ": channel mismatch: x ", x.str(), " has ", C,
             " channels but weight ", w.str(), " with groups ", p.groups, " expects ",
             w.size(3) * p.groups);
  MOKD_CHECK(O % p.groups == 0, op, ": weight ", w.str(), " has ", O,
             " output channels, not divisible by groups ", p.groups);
  MOKD_CHECK(kh <= x.size(1) + 2 * p.pad_h && kw <= x.size(2) + 2 * p.pad_w, op, ": kernel ", kh,
             "x", kw, " of weight ", w.str(), " is larger than the padded input of x ", x.str(),
             " (padding ", p.pad_h, "x", p.pad_w, ")");
  if (bias.defined()) {
    check_same(op, x, bias, "bias");
    MOKD_CHECK(bias.dim() == 1 && bias.size(0) == O, op, ": bias ", bias.str(), " must be [", O,
               "] for weight ", w.str());
  }

  // Under MatmulPrecision::BF16 (engine/precision.h), or for a bf16 x, the convolution takes
  // bf16 operands and writes a bf16 activation (f32 accumulation; cuDNN's bf16 configuration);
  // an f32 bias is then added to it (f32 math, rounded once more). Its backward products take
  // the incoming bf16 gradient likewise.
  const DType op_dt = detail::product_dtype(x);
  const bool bf16 = op_dt == DType::BF16;
  Tensor xc = detail::contiguous_as(x, op_dt), wc = detail::product_operand(w, op_dt);
  Tensor bc = bias.defined() ? bias.contiguous() : Tensor();
  const Shape y_shape = {x.size(0), out_extent(x.size(1), kh, p.stride_h, p.pad_h),
                         out_extent(x.size(2), kw, p.stride_w, p.pad_w), O};
  Tensor y;
  if (bf16) {
    y = Tensor::empty(y_shape, DType::BF16, x.device());
    backend_for(x).conv2d(xc, wc, nullptr, p, y);
    if (bc.defined())
      backend_for(x).binary(BinaryOp::Add, y, bc.view({1, 1, 1, O}).expand_view(y_shape), y);
  } else {
    y = empty_as(xc, y_shape);
    backend_for(x).conv2d(xc, wc, bc.defined() ? &bc : nullptr, p, y);
  }
  if (!needs_grad({&x, &w, &bias})) return y;

  const bool gx_needed = x.requires_grad(), gw_needed = w.requires_grad();
  const bool gb_needed = bias.defined() && bias.requires_grad();
  // Save only what the wanted gradients read: x for the weight's, w for the input's.
  Tensor xs = gw_needed ? xc.detach() : Tensor();
  Tensor ws = gx_needed ? wc.detach() : Tensor();
  Shape x_shape = x.shape(), w_shape = w.shape();
  const DType x_dt = x.dtype(), w_dt = w.dtype(), b_dt = bias.defined() ? bias.dtype() : w_dt;
  record(op, y, {x, w, bias}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = g.contiguous();
    Tensor go = detail::contiguous_as(gc, op_dt);  // the products' operand
    Tensor gx, gw, gb;
    if (gx_needed) {
      gx = Tensor::empty(x_shape, op_dt, gc.device());
      backend_for(gc).conv2d_backward_data(go, ws, p, gx);
      if (x_dt != op_dt) gx = gx.to(x_dt);
    }
    if (gw_needed) {  // the products write op_dt; the parameter's gradient is of its dtype
      gw = Tensor::empty(w_shape, op_dt, gc.device());
      backend_for(gc).conv2d_backward_weight(go, xs, p, gw);
      if (w_dt != op_dt) gw = gw.to(w_dt);
    }
    if (gb_needed) gb = channel_sum(gc, b_dt);  // sums the gradient in f32
    return {gx, gw, gb};
  });
  return y;
}

Tensor bias_act(const Tensor& x, const Tensor& bias, const Tensor& residual, bool relu) {
  const char* op = "bias_act";
  detail::check_float(op, x, "x");
  MOKD_CHECK(!needs_grad({&x, &bias, &residual}), op,
             ": inference only (it has no backward); an input needs a gradient");
  check_same(op, x, bias, "bias");
  MOKD_CHECK(x.dim() >= 1 && bias.dim() == 1 && bias.size(0) == x.size(-1), op, ": bias ",
             bias.str(), " must be [", x.dim() >= 1 ? x.size(-1) : 0, "] for x ", x.str());
  Tensor xc = x.contiguous(), bc = bias.contiguous().to(DType::F32), rc;
  if (residual.defined()) {
    check_same(op, x, residual, "residual");
    MOKD_CHECK(residual.shape() == x.shape(), op, ": residual ", residual.str(),
               " must have x's shape ", x.str());
    rc = detail::contiguous_as(residual, xc.dtype());
  }
  Tensor y = empty_like(xc);
  backend_for(x).bias_act(xc, bc, rc.defined() ? &rc : nullptr, relu, y);
  return y;
}

namespace {

// A batch norm's forward and what its backward reads (batch_norm2d, batch_norm2d_relu).
struct BatchNormForward {
  Tensor xc, wc, bc, y;
  Tensor mean, invstd;  // what backward normalises with (defined when `for_backward`)
};

BatchNormForward batch_norm_forward(const char* op, const Tensor& x, const Tensor& w,
                                    const Tensor& b, Tensor& running_mean, Tensor& running_var,
                                    bool training, float momentum, float eps, bool for_backward) {
  detail::check_float(op, x, "x");
  MOKD_CHECK(x.dim() == 4, op, ": x must be [N, H, W, C] (rank 4), got ", x.str());
  check_per_channel(op, x, w, "weight");
  check_per_channel(op, x, b, "bias");
  check_per_channel(op, x, running_mean, "running_mean");
  check_per_channel(op, x, running_var, "running_var");
  MOKD_CHECK(eps > 0.f, op, ": eps must be > 0, got ", eps);
  MOKD_CHECK(momentum >= 0.f && momentum <= 1.f, op, ": momentum must be in [0, 1], got ",
             momentum);
  const int64_t C = x.size(3), rows = x.numel() / std::max<int64_t>(C, 1);

  BatchNormForward f;
  f.xc = x.contiguous();
  f.wc = w.contiguous();
  f.bc = b.contiguous();
  f.y = empty_like(f.xc);
  Backend& be = backend_for(x);
  if (training) {
    MOKD_CHECK(rows > 1, op, ": training needs more than one value per channel, got x ", x.str());
    // Updated in place: they must be the buffers themselves, not copies.
    MOKD_CHECK(running_mean.is_contiguous() && running_var.is_contiguous(), op, ": running_mean ",
               running_mean.str(), " and running_var ", running_var.str(),
               " must be contiguous (updated in place)");
    // Statistics stay f32 whatever the activations' dtype.
    f.mean = Tensor::empty({C}, DType::F32, x.device());
    f.invstd = Tensor::empty({C}, DType::F32, x.device());
    be.batch_norm_train(f.xc, f.wc, f.bc, running_mean, running_var, momentum, eps, f.y, f.mean,
                        f.invstd);
  } else {
    Tensor rm = running_mean.contiguous(), rv = running_var.contiguous();
    be.batch_norm_eval(f.xc, f.wc, f.bc, rm, rv, eps, f.y);
    if (for_backward) {
      // Copies: a later training step must not change the constants this backward uses.
      f.mean = rm.dtype() == DType::F32 ? rm.clone() : rm.to(DType::F32);
      f.invstd = Tensor::empty({C}, DType::F32, x.device());
      be.unary(UnaryOp::AddScalar, rv.to(DType::F32), f.invstd, eps);
      be.unary(UnaryOp::Sqrt, f.invstd, f.invstd, 0.f);
      be.unary(UnaryOp::Reciprocal, f.invstd, f.invstd, 0.f);
    }
  }
  return f;
}

// The gradients of x, w and b from the gradient of the batch norm's output.
std::vector<Tensor> batch_norm_grads(const Tensor& g, const Tensor& xs, const Tensor& ws,
                                     const Tensor& mean, const Tensor& invstd, bool training,
                                     bool gx_needed, bool gw_needed, bool gb_needed) {
  const int64_t C = xs.size(3);
  Tensor gc = g.contiguous();
  // Activation gradient of x's dtype; parameter gradients f32, as the kernel computes them.
  Tensor gx = empty_like(xs);
  Tensor gw = Tensor::empty({C}, DType::F32, xs.device());
  Tensor gb = Tensor::empty({C}, DType::F32, xs.device());
  backend_for(gc).batch_norm_backward(gc, xs, ws, mean, invstd, training, gx, gw, gb);
  return {gx_needed ? gx : Tensor(), gw_needed ? gw : Tensor(), gb_needed ? gb : Tensor()};
}

}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum, float eps) {
  const char* op = "batch_norm2d";
  const bool grad = needs_grad({&x, &w, &b});
  BatchNormForward f =
      batch_norm_forward(op, x, w, b, running_mean, running_var, training, momentum, eps, grad);
  Tensor y = f.y;
  if (!grad) return y;
  const bool gx_needed = x.requires_grad(), gw_needed = w.requires_grad(),
             gb_needed = b.requires_grad();
  Tensor xs = f.xc.detach(), wsv = f.wc.detach(), ms = f.mean.detach(), is = f.invstd.detach();
  record(op, y, {x, w, b}, [=](const Tensor& g) -> std::vector<Tensor> {
    return batch_norm_grads(g, xs, wsv, ms, is, training, gx_needed, gw_needed, gb_needed);
  });
  return y;
}

Tensor batch_norm2d_relu(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum, float eps,
                         const Tensor& residual) {
  const char* op = "batch_norm2d_relu";
  const bool grad = needs_grad({&x, &w, &b, &residual});
  BatchNormForward f =
      batch_norm_forward(op, x, w, b, running_mean, running_var, training, momentum, eps, grad);
  Tensor y = f.y;  // the batch norm's output, then the sum and the ReLU in place
  Backend& be = backend_for(x);
  if (residual.defined()) {
    MOKD_CHECK(residual.device() == x.device() && residual.shape() == x.shape(), op, ": residual ",
               residual.str(), " must have x's shape and device, x ", x.str());
    // An f32 residual joins a bf16 y as the composition's add does: read in f32, one rounding.
    const Tensor r = residual.dtype() == DType::F32 ? residual.contiguous()
                                                    : detail::contiguous_as(residual, y.dtype());
    be.binary(BinaryOp::Add, y, r, y);
  }
  be.unary(UnaryOp::Relu, y, y, 0.f);
  if (!grad) return y;
  const bool gx_needed = x.requires_grad(), gw_needed = w.requires_grad(),
             gb_needed = b.requires_grad(),
             gr_needed = residual.defined() && residual.requires_grad();
  const DType r_dt = residual.defined() ? residual.dtype() : y.dtype();
  // The ReLU's mask comes from its output (y > 0 exactly where its input was), so the batch
  // norm's output is not kept.
  Tensor xs = f.xc.detach(), wsv = f.wc.detach(), ms = f.mean.detach(), is = f.invstd.detach();
  Tensor ys = y.detach();
  record(op, y, {x, w, b, residual}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = detail::contiguous_as(g, ys.dtype());
    Tensor gz = empty_like(ys);
    backend_for(gc).unary_backward(UnaryOp::Relu, ys, gc, gz, 0.f);
    std::vector<Tensor> out =
        batch_norm_grads(gz, xs, wsv, ms, is, training, gx_needed, gw_needed, gb_needed);
    out.push_back(gr_needed ? (r_dt == gz.dtype() ? gz : gz.to(r_dt)) : Tensor());
    return out;
  });
  return y;
}

Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) {
  const char* op = "max_pool2d";
  check_pool(op, x, p);
  Tensor xc = x.contiguous();
  Shape ys = pool_out_shape(x, p);
  Tensor y = empty_as(xc, ys);
  Tensor arg = Tensor::empty(ys, DType::I64, x.device());
  backend_for(x).max_pool2d(xc, p, y, arg);
  if (!needs_grad({&x})) return y;
  Shape xs = x.shape();
  record(op, y, {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = g.contiguous();
    Tensor gx = empty_as(gc, xs);
    backend_for(gc).max_pool2d_backward(gc, arg, gx);
    return {gx};
  });
  return y;
}

Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p) {
  const char* op = "avg_pool2d";
  check_pool(op, x, p);
  Tensor xc = x.contiguous();
  Tensor y = empty_as(xc, pool_out_shape(x, p));
  backend_for(x).avg_pool2d(xc, p, y);
  if (!needs_grad({&x})) return y;
  Shape xs = x.shape();
  record(op, y, {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gc = g.contiguous();
    Tensor gx = empty_as(gc, xs);
    backend_for(gc).avg_pool2d_backward(gc, p, gx);
    return {gx};
  });
  return y;
}

Tensor global_avg_pool2d(const Tensor& x) {
  detail::check_float("global_avg_pool2d", x, "x");
  MOKD_CHECK(x.dim() == 4, "global_avg_pool2d: x must be [N, H, W, C] (rank 4), got ", x.str());
  MOKD_CHECK(x.size(1) > 0 && x.size(2) > 0, "global_avg_pool2d: empty spatial dims in x ",
             x.str());
  return mean(x, {1, 2});
}

}  // namespace mokd
