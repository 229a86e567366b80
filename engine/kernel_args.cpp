// Shape contracts of backend kernels (engine/kernel_args.h), shared by the CPU and CUDA backends.
#include "engine/kernel_args.h"

#include <algorithm>
#include <string>

#include "engine/kernel_costs.h"

namespace mokd {

namespace {

const char* device_type_name(DeviceType on) { return on == DeviceType::CPU ? "cpu" : "cuda"; }

void expect_contiguous(const Tensor& t, const char* kernel, const char* arg) {
  MOKD_CHECK(t.is_contiguous(), kernel, ": ", arg, " must be contiguous, got strides ",
             shape_str(t.strides()), " for ", t.str());
}

}  // namespace

void expect_f32(const Tensor& t, DeviceType on, const char* kernel, const char* arg) {
  MOKD_CHECK(t.defined() && t.dtype() == DType::F32 && t.device().type == on, kernel, ": ", arg,
             " must be f32 on ", device_type_name(on), ", got ",
             t.defined() ? t.str() : std::string("undefined"));
  expect_contiguous(t, kernel, arg);
}

void expect_activation(const Tensor& t, DeviceType on, const char* kernel, const char* arg,
                       const Tensor* like) {
  MOKD_CHECK(
      t.defined() && t.device().type == on &&
          (like ? t.dtype() == like->dtype() : t.dtype() == DType::F32 || t.dtype() == DType::BF16),
      kernel, ": ", arg, " must be ", like ? dtype_name(like->dtype()) : "f32 or bf16", " on ",
      device_type_name(on), ", got ", t.defined() ? t.str() : std::string("undefined"));
  expect_contiguous(t, kernel, arg);
}

DType expect_float_operands(const char* kernel, DeviceType on,
                            std::initializer_list<std::pair<const Tensor*, const char*>> ts) {
  auto all = [&] {  // every operand, for the message (built only on failure)
    std::string m;
    for (const auto& [t, name] : ts)
      m +=
          std::string(m.empty() ? "" : ", ") + name + " " + (t->defined() ? t->str() : "undefined");
    return m;
  };
  const Tensor* first = ts.size() ? ts.begin()->first : nullptr;
  const DType dt = first && first->defined() ? first->dtype() : DType::F32;
  MOKD_CHECK(dt == DType::F32 || dt == DType::BF16, kernel,
             ": operands must be all f32 or all bf16, got ", all());
  for (const auto& [t, name] : ts) {
    MOKD_CHECK(t->defined() && t->device().type == on, kernel, ": ", name, " must be on ",
               device_type_name(on), ", got ", t->defined() ? t->str() : std::string("undefined"));
    MOKD_CHECK(t->dtype() == dt, kernel, ": operands must be all f32 or all bf16, got ", all());
    expect_contiguous(*t, kernel, name);
  }
  return dt;
}

void expect_on(const Tensor& t, DeviceType on, const char* kernel, const char* arg) {
  MOKD_CHECK(t.defined() && t.device().type == on, kernel, ": ", arg, " must be on ",
             device_type_name(on), ", got ", t.defined() ? t.str() : std::string("undefined"));
  expect_contiguous(t, kernel, arg);
}

// ---- elementwise ----

void unary_args(DeviceType on, UnaryOp op, const Tensor& x, const Tensor& out) {
  const char* k = unary_name(op);
  expect_activation(x, on, k, "x");
  expect_activation(out, on, k, "out", &x);
  MOKD_CHECK(x.numel() == out.numel(), k, ": out ", out.str(), " does not match x ", x.str());
  note_kernel(k, {&x}, {&out});
}

void unary_backward_args(DeviceType on, UnaryOp op, const Tensor& x, const Tensor& gout,
                         const Tensor& gin) {
  const char* k = unary_name(op);
  expect_activation(x, on, k, "x");
  expect_activation(gout, on, k, "grad_out", &x);
  expect_activation(gin, on, k, "grad_in", &x);
  MOKD_CHECK(x.numel() == gout.numel() && x.numel() == gin.numel(), k, ": gradients ", gout.str(),
             ", ", gin.str(), " do not match x ", x.str());
  note_kernel(k, {&x, &gout}, {&gin});
}

void binary_args(DeviceType on, const Tensor& a, const Tensor& b, const Tensor& out) {
  const DType dt = a.dtype();
  MOKD_CHECK((dt == DType::F32 || dt == DType::BF16) &&
                 (b.dtype() == dt || b.dtype() == DType::F32) && a.device().type == on &&
                 b.device().type == on,
             "binary: operands must be f32 or bf16 on ", device_type_name(on),
             ", b of a's dtype or f32, got ", a.str(), " and ", b.str());
  expect_activation(out, on, "binary", "out", &a);
  MOKD_CHECK(a.shape() == out.shape() && b.shape() == out.shape(), "binary: operands ", a.str(),
             " and ", b.str(), " must be expanded to the output ", out.str());
  note_kernel("binary", {&a, &b}, {&out});
}

void bias_act_args(DeviceType on, const Tensor& x, const Tensor& bias, const Tensor* residual,
                   const Tensor& y) {
  expect_activation(x, on, "bias_act", "x");
  expect_activation(y, on, "bias_act", "y", &x);
  if (residual) expect_activation(*residual, on, "bias_act", "residual", &x);
  MOKD_CHECK(bias.dtype() == DType::F32 && bias.device().type == on && bias.is_contiguous() &&
                 bias.dim() == 1 && x.dim() >= 1 && bias.size(0) == x.size(-1),
             "bias_act: bias must be a contiguous f32 vector of x's last dim on ",
             device_type_name(on), ", got ", bias.str(), " for x ", x.str());
  MOKD_CHECK(y.shape() == x.shape() && (!residual || residual->shape() == x.shape()),
             "bias_act: x ", x.str(), ", y ", y.str(), residual ? " and residual " : "",
             residual ? residual->str() : "", " must have one shape");
  note_kernel("bias_act", {&x, &bias, residual}, {&y}, static_cast<double>(x.numel()));
}

namespace {
// bias [C] f32 along x's last dim (bias_gelu and its backward).
RowDims expect_lastdim_bias(DeviceType on, const char* k, const Tensor& x, const Tensor& bias) {
  MOKD_CHECK(bias.dtype() == DType::F32 && bias.device().type == on && bias.is_contiguous() &&
                 bias.dim() == 1 && x.dim() >= 1 && bias.size(0) == x.size(-1),
             k, ": bias must be a contiguous f32 vector of x's last dim on ", device_type_name(on),
             ", got ", bias.str(), " for x ", x.str());
  const int64_t c = x.size(-1);
  return {c ? x.numel() / c : 0, c};
}
}  // namespace

RowDims bias_gelu_args(DeviceType on, const Tensor& x, const Tensor& bias, const Tensor& y) {
  expect_activation(x, on, "bias_gelu", "x");
  expect_activation(y, on, "bias_gelu", "y", &x);
  const RowDims d = expect_lastdim_bias(on, "bias_gelu", x, bias);
  MOKD_CHECK(y.shape() == x.shape(), "bias_gelu: y ", y.str(), " must have x's shape ", x.str());
  note_kernel("bias_gelu", {&x, &bias}, {&y});
  return d;
}

RowDims bias_gelu_backward_args(DeviceType on, const Tensor& g, const Tensor& x, const Tensor& bias,
                                const Tensor& gx, const Tensor* gbias) {
  const char* k = "bias_gelu_backward";
  expect_activation(x, on, k, "x");
  expect_activation(g, on, k, "grad_y", &x);
  expect_activation(gx, on, k, "grad_x", &x);
  const RowDims d = expect_lastdim_bias(on, k, x, bias);
  MOKD_CHECK(g.shape() == x.shape() && gx.shape() == x.shape(), k, ": grad_y ", g.str(),
             " and grad_x ", gx.str(), " must match x ", x.str());
  if (gbias) {
    expect_f32(*gbias, on, k, "grad_bias");
    MOKD_CHECK(gbias->numel() == d.cols, k, ": grad_bias ", gbias->str(), " must have ", d.cols,
               " elements (the last dim)");
  }
  note_kernel(k, {&g, &x, &bias}, {&gx, gbias});
  return d;
}

// ---- reductions ----

void reduce_sum_args(DeviceType on, const Tensor& x, const Tensor& out) {
  expect_activation(x, on, "reduce_sum", "x");
  expect_activation(out, on, "reduce_sum", "out");
  MOKD_CHECK(out.dtype() == x.dtype() || out.dtype() == DType::F32, "reduce_sum: out ", out.str(),
             " must be f32 or of x's dtype, x is ", x.str());
  MOKD_CHECK(x.dim() == out.dim(), "reduce_sum: out ", out.str(), " must have the rank of x ",
             x.str());
  for (int64_t k = 0; k < x.dim(); ++k)
    MOKD_CHECK(out.shape()[k] == x.shape()[k] || out.shape()[k] == 1, "reduce_sum: out ", out.str(),
               " does not match x ", x.str());
  note_kernel("reduce_sum", {&x}, {&out});
}

RowDims argmax_args(DeviceType on, const Tensor& x, const Tensor& out) {
  expect_f32(x, on, "argmax", "x");
  MOKD_CHECK(x.dim() >= 1 && x.size(-1) > 0, "argmax: needs a non-empty last dim, got ", x.str());
  MOKD_CHECK(out.dtype() == DType::I64 && out.numel() == x.numel() / x.size(-1), "argmax: out ",
             out.str(), " must be i64 with one element per row of ", x.str());
  expect_on(out, on, "argmax", "out");
  note_kernel("argmax", {&x}, {&out});
  return {x.numel() / x.size(-1), x.size(-1)};
}

void sum_squares_args(DeviceType on, const Tensor& x, const Tensor& out) {
  expect_f32(x, on, "sum_squares", "x");
  expect_f32(out, on, "sum_squares", "out");
  MOKD_CHECK(out.numel() == 1, "sum_squares: out must have one element, got ", out.str());
  note_kernel("sum_squares", {&x, &out}, {&out});
}

// ---- softmax family ----

namespace {

RowDims last_dim_rows(const Tensor& x) {
  const int64_t c = x.dim() ? x.size(-1) : 1;
  return {c ? x.numel() / c : 0, c};
}

}  // namespace

RowDims softmax_args(DeviceType on, const Tensor& x, const Tensor& y, bool log) {
  const char* k = log ? "log_softmax" : "softmax";
  expect_activation(x, on, k, "x");
  expect_activation(y, on, k, "y", &x);
  MOKD_CHECK(x.shape() == y.shape(), k, ": y ", y.str(), " must match x ", x.str());
  note_kernel(log ? "log_softmax" : "softmax", {&x}, {&y});
  return last_dim_rows(x);
}

RowDims softmax_backward_args(DeviceType on, const Tensor& y, const Tensor& gy, const Tensor& gx,
                              bool log) {
  const char* k = log ? "log_softmax_backward" : "softmax_backward";
  expect_activation(y, on, k, "y");
  expect_activation(gy, on, k, "grad_y", &y);
  expect_activation(gx, on, k, "grad_x", &y);
  MOKD_CHECK(y.shape() == gy.shape() && y.shape() == gx.shape(), k, ": shapes of y ", y.str(),
             ", grad_y ", gy.str(), " and grad_x ", gx.str(), " differ");
  note_kernel(log ? "log_softmax_backward" : "softmax_backward", {&y, &gy}, {&gx});
  return last_dim_rows(y);
}

RowDims logsumexp_args(DeviceType on, const Tensor& x, const Tensor& out) {
  expect_f32(x, on, "logsumexp", "x");
  expect_f32(out, on, "logsumexp", "out");
  MOKD_CHECK(x.dim() >= 1, "logsumexp: x must have rank >= 1, got ", x.str());
  const int64_t c = x.size(-1), rows = out.numel();
  MOKD_CHECK(rows * c == x.numel(), "logsumexp: out ", out.str(),
             " must have one element per row of ", x.str());
  note_kernel("logsumexp", {&x}, {&out});
  return {rows, c};
}

// ---- gemm ----

GemmDims gemm_dims(const Tensor& t) {
  if (t.dim() == 2) return {1, t.size(0), t.size(1)};
  return {t.size(0), t.size(1), t.size(2)};
}

GemmShape gemm_shape(const Tensor& a, const Tensor& b, const Tensor& c, bool trans_a,
                     bool trans_b) {
  auto ranked = [](const Tensor& t) { return t.dim() == 2 || t.dim() == 3; };
  MOKD_CHECK(ranked(a) && ranked(b) && ranked(c), "gemm: operands must have rank 2 or 3, got a ",
             a.str(), ", b ", b.str(), ", c ", c.str());
  GemmShape s{gemm_dims(a), gemm_dims(b), gemm_dims(c), 0, 0, 0};
  s.M = trans_a ? s.a.cols : s.a.rows;
  s.K = trans_a ? s.a.rows : s.a.cols;
  int64_t Kb = trans_b ? s.b.cols : s.b.rows;
  s.N = trans_b ? s.b.rows : s.b.cols;
  const char* ta = trans_a ? "^T" : "";
  const char* tb = trans_b ? "^T" : "";
  MOKD_CHECK(s.K == Kb, "gemm: inner dimensions differ: a", ta, " ", a.str(), " (K=", s.K,
             ") and b", tb, " ", b.str(), " (K=", Kb, ")");
  MOKD_CHECK(s.c.rows == s.M && s.c.cols == s.N, "gemm: c ", c.str(), " must be [.., ", s.M, ", ",
             s.N, "] for a", ta, " ", a.str(), " and b", tb, " ", b.str());
  MOKD_CHECK((s.a.batch == s.b.batch || s.a.batch == 1 || s.b.batch == 1) &&
                 s.c.batch == std::max(s.a.batch, s.b.batch),
             "gemm: batch sizes of a ", a.str(), ", b ", b.str(), " and c ", c.str(),
             " do not match (a and b equal or 1, c their maximum)");
  return s;
}

GemmShape gemm_args(DeviceType on, const Tensor& a, const Tensor& b, const Tensor& c, bool trans_a,
                    bool trans_b) {
  for (auto [t, name] : {std::pair{&a, "a"}, std::pair{&b, "b"}, std::pair{&c, "c"}}) {
    expect_on(*t, on, "gemm", name);
    MOKD_CHECK(t->dtype() == DType::F32 || t->dtype() == DType::BF16, "gemm: ", name,
               " must be f32 or bf16, got ", t->str());
  }
  MOKD_CHECK(a.dtype() == b.dtype() && (a.dtype() == DType::BF16 || c.dtype() == DType::F32),
             "gemm: a ", a.str(), " and b ", b.str(),
             " must share a dtype, and c must be f32 unless they are bf16; c is ", c.str());
  const GemmShape s = gemm_shape(a, b, c, trans_a, trans_b);
  note_kernel("gemm", {&a, &b}, {&c}, 2.0 * static_cast<double>(s.c.batch) * s.M * s.N * s.K);
  return s;
}

// ---- conv2d ----

ConvGeom conv_geom(const char* kernel, const Shape& xs, const Shape& ws, const Shape& ys,
                   const Conv2dParams& p) {
  MOKD_CHECK(xs.size() == 4 && ws.size() == 4 && ys.size() == 4, kernel,
             ": x, w, y must have rank 4, got ", shape_str(xs), ", ", shape_str(ws), ", ",
             shape_str(ys));
  ConvGeom g{};
  g.N = xs[0], g.H = xs[1], g.W = xs[2], g.C = xs[3];
  g.O = ws[0], g.kh = ws[1], g.kw = ws[2], g.Cg = ws[3];
  g.G = p.groups;
  g.sh = p.stride_h, g.sw = p.stride_w, g.ph = p.pad_h, g.pw = p.pad_w;
  MOKD_CHECK(g.G >= 1 && g.Cg * g.G == g.C && g.O % g.G == 0 && g.sh >= 1 && g.sw >= 1, kernel,
             ": x ", shape_str(xs), " and w ", shape_str(ws), " do not fit groups ", g.G,
             " and strides ", g.sh, "x", g.sw);
  g.Og = g.O / g.G;
  g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
  g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
  MOKD_CHECK(ys[0] == g.N && ys[1] == g.Ho && ys[2] == g.Wo && ys[3] == g.O, kernel, ": y ",
             shape_str(ys), " must be [", g.N, ", ", g.Ho, ", ", g.Wo, ", ", g.O, "] for x ",
             shape_str(xs), " and w ", shape_str(ws));
  return g;
}

// Forward, backward data and backward weight: each N * Ho * Wo * O multiply-adds of K() terms.
ConvGeom conv_args(const char* kernel, const Tensor& x, const Tensor& w, const Tensor& y,
                   const Conv2dParams& p, const Tensor* bias, bool backward_data) {
  const ConvGeom g = conv_geom(kernel, x.shape(), w.shape(), y.shape(), p);
  const double flops = 2.0 * static_cast<double>(g.N) * g.P() * g.O * g.K();
  if (std::string(kernel) == "conv2d")
    note_kernel("conv2d", {&x, &w, bias}, {&y}, flops);
  else if (backward_data)
    note_kernel("conv2d_backward_data", {&y, &w}, {&x}, flops);
  else
    note_kernel("conv2d_backward_weight", {&y, &x}, {&w}, flops);
  return g;
}

// ---- pooling ----

PoolGeom pool_geom(const char* kernel, const Shape& xs, const Shape& ys, const Pool2dParams& p) {
  MOKD_CHECK(xs.size() == 4 && ys.size() == 4, kernel, ": x and y must have rank 4, got ",
             shape_str(xs), " and ", shape_str(ys));
  MOKD_CHECK(p.kernel_h >= 1 && p.kernel_w >= 1 && p.stride_h >= 1 && p.stride_w >= 1 &&
                 p.pad_h >= 0 && p.pad_w >= 0,
             kernel, ": bad kernel/stride/padding");
  PoolGeom g{xs[0], xs[1], xs[2], xs[3], 0, 0};
  g.Ho = (g.H + 2 * p.pad_h - p.kernel_h) / p.stride_h + 1;
  g.Wo = (g.W + 2 * p.pad_w - p.kernel_w) / p.stride_w + 1;
  MOKD_CHECK(ys[0] == g.N && ys[1] == g.Ho && ys[2] == g.Wo && ys[3] == g.C, kernel, ": y ",
             shape_str(ys), " must be [", g.N, ", ", g.Ho, ", ", g.Wo, ", ", g.C, "] for x ",
             shape_str(xs));
  return g;
}

PoolGeom max_pool2d_args(DeviceType on, const Tensor& x, const Pool2dParams& p, const Tensor& y,
                         const Tensor& argmax) {
  expect_activation(x, on, "max_pool2d", "x");
  expect_activation(y, on, "max_pool2d", "y", &x);
  MOKD_CHECK(argmax.dtype() == DType::I64 && argmax.device().type == on && argmax.is_contiguous() &&
                 argmax.shape() == y.shape(),
             "max_pool2d: argmax ", argmax.str(), " must be contiguous i64 shaped like y ",
             y.str());
  note_kernel("max_pool2d", {&x}, {&y, &argmax});
  return pool_geom("max_pool2d", x.shape(), y.shape(), p);
}

void max_pool2d_backward_args(DeviceType on, const Tensor& gy, const Tensor& argmax,
                              const Tensor& gx) {
  expect_activation(gy, on, "max_pool2d_backward", "gy");
  expect_activation(gx, on, "max_pool2d_backward", "gx", &gy);
  MOKD_CHECK(argmax.dtype() == DType::I64 && argmax.device().type == on && argmax.is_contiguous() &&
                 argmax.shape() == gy.shape(),
             "max_pool2d_backward: argmax ", argmax.str(),
             " must be contiguous i64 shaped like gy ", gy.str());
  MOKD_CHECK(gx.dim() == 4 && gy.dim() == 4 && gx.size(0) == gy.size(0) && gx.size(3) == gy.size(3),
             "max_pool2d_backward: gx ", gx.str(), " does not fit gy ", gy.str());
  note_kernel("max_pool2d_backward", {&gy, &argmax}, {&gx});
}

PoolGeom avg_pool2d_args(DeviceType on, const Tensor& x, const Pool2dParams& p, const Tensor& y) {
  expect_activation(x, on, "avg_pool2d", "x");
  expect_activation(y, on, "avg_pool2d", "y", &x);
  note_kernel("avg_pool2d", {&x}, {&y});
  return pool_geom("avg_pool2d", x.shape(), y.shape(), p);
}

PoolGeom avg_pool2d_backward_args(DeviceType on, const Tensor& gy, const Pool2dParams& p,
                                  const Tensor& gx) {
  expect_activation(gy, on, "avg_pool2d_backward", "gy");
  expect_activation(gx, on, "avg_pool2d_backward", "gx", &gy);
  note_kernel("avg_pool2d_backward", {&gy}, {&gx});
  return pool_geom("avg_pool2d_backward", gx.shape(), gy.shape(), p);
}

// ---- layer norm ----

namespace {

void expect_row_stats(const Tensor& t, int64_t rows, DeviceType on, const char* kernel,
                      const char* arg) {
  expect_f32(t, on, kernel, arg);
  MOKD_CHECK(t.numel() == rows, kernel, ": ", arg, " ", t.str(), " must have ", rows,
             " elements (one per row)");
}

void expect_ln_param(const Tensor* p, int64_t d, DeviceType on, const char* kernel,
                     const char* arg) {
  if (!p) return;
  expect_f32(*p, on, kernel, arg);
  MOKD_CHECK(p->numel() == d, kernel, ": ", arg, " ", p->str(), " must have ", d,
             " elements (the last dim)");
}

}  // namespace

RowDims layer_norm_args(DeviceType on, const Tensor& x, const Tensor* w, const Tensor* b,
                        const Tensor& y, const Tensor& mean, const Tensor& rstd) {
  expect_activation(x, on, "layer_norm", "x");
  expect_activation(y, on, "layer_norm", "y", &x);
  MOKD_CHECK(x.dim() >= 1 && x.shape() == y.shape(), "layer_norm: y ", y.str(), " must match x ",
             x.str());
  const int64_t d = x.size(-1), rows = d ? x.numel() / d : 0;
  expect_row_stats(mean, rows, on, "layer_norm", "mean");
  expect_row_stats(rstd, rows, on, "layer_norm", "rstd");
  expect_ln_param(w, d, on, "layer_norm", "weight");
  expect_ln_param(b, d, on, "layer_norm", "bias");
  note_kernel("layer_norm", {&x, w, b}, {&y, &mean, &rstd});
  return {rows, d};
}

RowDims layer_norm_backward_args(DeviceType on, const Tensor& gy, const Tensor& x, const Tensor* w,
                                 const Tensor& mean, const Tensor& rstd, const Tensor& gx,
                                 const Tensor* gw, const Tensor* gb) {
  const char* k = "layer_norm_backward";
  expect_activation(x, on, k, "x");
  expect_activation(gy, on, k, "grad_y", &x);
  expect_activation(gx, on, k, "grad_x", &x);
  MOKD_CHECK(x.dim() >= 1 && gy.shape() == x.shape() && gx.shape() == x.shape(), k, ": grad_y ",
             gy.str(), " and grad_x ", gx.str(), " must match x ", x.str());
  const int64_t d = x.size(-1), rows = d ? x.numel() / d : 0;
  expect_row_stats(mean, rows, on, k, "mean");
  expect_row_stats(rstd, rows, on, k, "rstd");
  expect_ln_param(w, d, on, k, "weight");
  expect_ln_param(gw, d, on, k, "grad_weight");
  expect_ln_param(gb, d, on, k, "grad_bias");
  note_kernel("layer_norm_backward", {&gy, &x, w, &mean, &rstd}, {&gx, gw, gb});
  return {rows, d};
}

RowDims add_layer_norm_args(DeviceType on, const Tensor& x, const Tensor& residual, const Tensor* w,
                            const Tensor* b, const Tensor& s, const Tensor& n, const Tensor& mean,
                            const Tensor& rstd) {
  const char* k = "add_layer_norm";
  expect_activation(x, on, k, "x");
  expect_activation(residual, on, k, "residual", &x);
  expect_activation(s, on, k, "s", &x);
  expect_activation(n, on, k, "n", &x);
  MOKD_CHECK(x.dim() >= 1 && residual.shape() == x.shape() && s.shape() == x.shape() &&
                 n.shape() == x.shape(),
             k, ": x ", x.str(), ", residual ", residual.str(), ", s ", s.str(), " and n ", n.str(),
             " must have one shape");
  const int64_t d = x.size(-1), rows = d ? x.numel() / d : 0;
  expect_row_stats(mean, rows, on, k, "mean");
  expect_row_stats(rstd, rows, on, k, "rstd");
  expect_ln_param(w, d, on, k, "weight");
  expect_ln_param(b, d, on, k, "bias");
  note_kernel(k, {&x, &residual, w, b}, {&s, &n, &mean, &rstd});
  return {rows, d};
}

RowDims add_layer_norm_backward_args(DeviceType on, const Tensor& gn, const Tensor* gs,
                                     const Tensor& s, const Tensor* w, const Tensor& mean,
                                     const Tensor& rstd, const Tensor& gx, const Tensor* gw,
                                     const Tensor* gb) {
  const char* k = "add_layer_norm_backward";
  expect_activation(s, on, k, "s");
  expect_activation(gn, on, k, "grad_n", &s);
  if (gs) expect_activation(*gs, on, k, "grad_s", &s);
  expect_activation(gx, on, k, "grad_x", &s);
  MOKD_CHECK(s.dim() >= 1 && gn.shape() == s.shape() && gx.shape() == s.shape() &&
                 (!gs || gs->shape() == s.shape()),
             k, ": grad_n ", gn.str(), ", grad_x ", gx.str(), gs ? " and grad_s " : "",
             gs ? gs->str() : "", " must match s ", s.str());
  const int64_t d = s.size(-1), rows = d ? s.numel() / d : 0;
  expect_row_stats(mean, rows, on, k, "mean");
  expect_row_stats(rstd, rows, on, k, "rstd");
  expect_ln_param(w, d, on, k, "weight");
  expect_ln_param(gw, d, on, k, "grad_weight");
  expect_ln_param(gb, d, on, k, "grad_bias");
  note_kernel(k, {&gn, gs, &s, w, &mean, &rstd}, {&gx, gw, gb});
  return {rows, d};
}

// ---- batch norm ----

namespace {

// rows and C of x viewed as [rows, C] (C = last dim); checks the per-channel tensors.
BnDims bn_dims(const char* kernel, DeviceType on, const Tensor& x,
               std::initializer_list<const Tensor*> per_channel) {
  MOKD_CHECK(x.dim() >= 1, kernel, ": x must have rank >= 1, got ", x.str());
  const int64_t C = x.size(-1), rows = C ? x.numel() / C : 0;
  for (const Tensor* t : per_channel) {
    expect_f32(*t, on, kernel, "per-channel tensor");
    MOKD_CHECK(t->numel() == C, kernel, ": per-channel tensor ", t->str(), " must have ", C,
               " elements for x ", x.str());
  }
  return {rows, C};
}

// x and y of one shape (the forward kernels).
void bn_like(const char* kernel, DeviceType on, const Tensor& x, const Tensor& y) {
  expect_activation(x, on, kernel, "x");
  expect_activation(y, on, kernel, "y", &x);
  MOKD_CHECK(x.shape() == y.shape(), kernel, ": y ", y.str(), " must match x ", x.str());
}

}  // namespace

BnDims batch_norm_train_args(DeviceType on, const Tensor& x, const Tensor& w, const Tensor& b,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                             const Tensor& save_mean, const Tensor& save_invstd) {
  const char* k = "batch_norm_train";
  bn_like(k, on, x, y);
  const BnDims d =
      bn_dims(k, on, x, {&w, &b, &running_mean, &running_var, &save_mean, &save_invstd});
  MOKD_CHECK(d.rows > 1, k, ": needs more than one value per channel, got x ", x.str());
  note_kernel("batch_norm_train", {&x, &w, &b, &running_mean, &running_var},
              {&y, &save_mean, &save_invstd, &running_mean, &running_var});
  return d;
}

BnDims batch_norm_eval_args(DeviceType on, const Tensor& x, const Tensor& w, const Tensor& b,
                            const Tensor& running_mean, const Tensor& running_var,
                            const Tensor& y) {
  bn_like("batch_norm_eval", on, x, y);
  note_kernel("batch_norm_eval", {&x, &w, &b, &running_mean, &running_var}, {&y});
  return bn_dims("batch_norm_eval", on, x, {&w, &b, &running_mean, &running_var});
}

BnDims batch_norm_backward_args(DeviceType on, const Tensor& gy, const Tensor& x, const Tensor& w,
                                const Tensor& mean, const Tensor& invstd, const Tensor& gx,
                                const Tensor& gw, const Tensor& gb) {
  const char* k = "batch_norm_backward";
  expect_activation(x, on, k, "x");
  expect_activation(gy, on, k, "gy", &x);
  expect_activation(gx, on, k, "gx", &x);
  const BnDims d = bn_dims(k, on, x, {&w, &mean, &invstd, &gw, &gb});
  MOKD_CHECK(gy.shape() == x.shape() && gx.shape() == x.shape(), k, ": gy ", gy.str(), " and gx ",
             gx.str(), " must match x ", x.str());
  note_kernel("batch_norm_backward", {&gy, &x, &w, &mean, &invstd}, {&gx, &gw, &gb});
  return d;
}

// ---- attention ----

namespace {

AttnDims attn_dims(const char* kernel, DeviceType on, const Tensor& q, const Tensor& k,
                   const Tensor& v, const Tensor& out, const Tensor& lse) {
  expect_f32(q, on, kernel, "q");
  expect_f32(k, on, kernel, "k");
  expect_f32(v, on, kernel, "v");
  expect_f32(out, on, kernel, "out");
  expect_f32(lse, on, kernel, "lse");
  MOKD_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, kernel,
             ": q, k, v must be [B, H, N, D], got q ", q.str(), ", k ", k.str(), ", v ", v.str());
  bool ok = k.size(0) == q.size(0) && v.size(0) == q.size(0) && k.size(1) == q.size(1) &&
            v.size(1) == q.size(1) && k.size(3) == q.size(3) && v.size(2) == k.size(2);
  MOKD_CHECK(ok, kernel, ": shapes do not match: q ", q.str(), ", k ", k.str(), ", v ", v.str());
  AttnDims a{q.size(0) * q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  MOKD_CHECK(out.shape() == (Shape{q.size(0), q.size(1), a.nq, a.dv}), kernel, ": out ", out.str(),
             " does not match q ", q.str(), " and v ", v.str());
  MOKD_CHECK(lse.shape() == (Shape{q.size(0), q.size(1), a.nq}), kernel, ": lse ", lse.str(),
             " must be [B, H, N] for q ", q.str());
  return a;
}

}  // namespace

namespace {
// Attention's two products, scores q k^T and probabilities times v.
double attention_flops(const AttnDims& a) {
  return 2.0 * static_cast<double>(a.bh) * a.nq * a.nk * static_cast<double>(a.d + a.dv);
}
}  // namespace

AttnDims attention_args(DeviceType on, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse) {
  const AttnDims a = attn_dims("attention", on, q, k, v, out, lse);
  note_kernel("attention", {&q, &k, &v}, {&out, &lse}, attention_flops(a));
  return a;
}

AttnDims attention_backward_args(DeviceType on, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& out, const Tensor& lse, const Tensor& gout,
                                 const Tensor& gq, const Tensor& gk, const Tensor& gv) {
  const char* kn = "attention_backward";
  const AttnDims a = attn_dims(kn, on, q, k, v, out, lse);
  expect_f32(gout, on, kn, "gout");
  expect_f32(gq, on, kn, "gq");
  expect_f32(gk, on, kn, "gk");
  expect_f32(gv, on, kn, "gv");
  MOKD_CHECK(gout.shape() == out.shape() && gq.shape() == q.shape() && gk.shape() == k.shape() &&
                 gv.shape() == v.shape(),
             kn, ": gradient shapes gout ", gout.str(), ", gq ", gq.str(), ", gk ", gk.str(),
             ", gv ", gv.str(), " do not match out ", out.str(), ", q ", q.str(), ", k ", k.str(),
             ", v ", v.str());
  note_kernel("attention_backward", {&q, &k, &v, &out, &lse, &gout}, {&gq, &gk, &gv},
              2 * attention_flops(a));  // four products: twice the forward's
  return a;
}

// ---- fused losses ----

namespace {

LossDims loss_logits(const char* k, DeviceType on, const Tensor& x, const char* arg) {
  expect_f32(x, on, k, arg);
  MOKD_CHECK(x.dim() == 2, k, ": ", arg, " must be [B, C], got ", x.str());
  return {x.size(0), x.size(1)};
}

void loss_like(const char* k, DeviceType on, const Tensor& t, const Tensor& x, const char* arg) {
  expect_f32(t, on, k, arg);
  MOKD_CHECK(t.shape() == x.shape(), k, ": ", arg, " ", t.str(), " must match ", x.str());
  MOKD_CHECK(t.device() == x.device(), k, ": ", arg, " ", t.str(), " and ", x.str(),
             " are on different devices");
}

void loss_rows_arg(const char* k, DeviceType on, const Tensor& t, int64_t B, const char* arg) {
  expect_f32(t, on, k, arg);
  MOKD_CHECK(t.numel() == B, k, ": ", arg, " ", t.str(), " must have one element per row (", B,
             ")");
}

void loss_targets(const char* k, DeviceType on, const Tensor& x, const Tensor* labels,
                  const Tensor* soft, float smoothing) {
  MOKD_CHECK((labels == nullptr) != (soft == nullptr), k,
             ": needs exactly one of labels and soft targets");
  if (labels) {
    expect_on(*labels, on, k, "labels");
    MOKD_CHECK(labels->dtype() == DType::I64 && labels->dim() == 1 &&
                   labels->size(0) == x.size(0) && labels->device() == x.device(),
               k, ": labels must be i64 [", x.size(0), "] on ", x.device().str(), " for logits ",
               x.str(), ", got ", labels->str());
  }
  if (soft) loss_like(k, on, *soft, x, "soft targets");
  MOKD_CHECK(smoothing >= 0.f && smoothing < 1.f, k, ": smoothing must be in [0, 1), got ",
             smoothing);
}

void loss_grad_rows(const char* k, DeviceType on, const Tensor& g, int64_t B) {
  expect_f32(g, on, k, "grad_loss_rows");
  MOKD_CHECK(g.numel() == B || g.numel() == 1, k, ": grad_loss_rows ", g.str(), " must have ", B,
             " elements or one");
}

}  // namespace

LossDims one_hot_args(DeviceType on, const Tensor& labels, const Tensor& out) {
  MOKD_CHECK(labels.dtype() == DType::I64 && labels.device().type == on && labels.dim() == 1,
             "one_hot: labels must be i64 [B] on ", device_type_name(on), ", got ", labels.str());
  expect_f32(out, on, "one_hot", "out");
  MOKD_CHECK(out.dim() == 2 && out.size(0) == labels.size(0), "one_hot: out ", out.str(),
             " must be [B, C] for labels ", labels.str());
  note_kernel("one_hot", {&labels}, {&out});
  return {out.size(0), out.size(1)};
}

LossDims ce_args(DeviceType on, const Tensor& logits, const Tensor* labels, const Tensor* soft,
                 float smoothing, const Tensor& loss_rows, const Tensor& lse) {
  const char* k = "cross_entropy";
  LossDims d = loss_logits(k, on, logits, "logits");
  loss_targets(k, on, logits, labels, soft, smoothing);
  loss_rows_arg(k, on, loss_rows, d.B, "loss_rows");
  loss_rows_arg(k, on, lse, d.B, "lse");
  note_kernel("cross_entropy", {&logits, labels, soft}, {&loss_rows, &lse});
  return d;
}

LossDims ce_backward_args(DeviceType on, const Tensor& logits, const Tensor* labels,
                          const Tensor* soft, float smoothing, const Tensor& lse,
                          const Tensor& gloss_rows, const Tensor* glogits, const Tensor* gsoft) {
  const char* k = "cross_entropy_backward";
  LossDims d = loss_logits(k, on, logits, "logits");
  loss_targets(k, on, logits, labels, soft, smoothing);
  loss_rows_arg(k, on, lse, d.B, "lse");
  loss_grad_rows(k, on, gloss_rows, d.B);
  if (glogits) loss_like(k, on, *glogits, logits, "grad_logits");
  if (gsoft) {
    MOKD_CHECK(soft, k, ": a soft-target gradient needs soft targets");
    loss_like(k, on, *gsoft, logits, "grad_soft");
  }
  note_kernel("cross_entropy_backward", {&logits, labels, soft, &lse, &gloss_rows},
              {glogits, gsoft});
  return d;
}

LossDims kl_args(DeviceType on, const Tensor& student, const Tensor& teacher, float temperature,
                 const Tensor& loss_rows, const Tensor& lse_s, const Tensor& lse_t) {
  const char* k = "kl_div";
  LossDims d = loss_logits(k, on, student, "student");
  loss_like(k, on, teacher, student, "teacher");
  MOKD_CHECK(temperature > 0.f, k, ": temperature must be > 0, got ", temperature);
  loss_rows_arg(k, on, loss_rows, d.B, "loss_rows");
  loss_rows_arg(k, on, lse_s, d.B, "lse_student");
  loss_rows_arg(k, on, lse_t, d.B, "lse_teacher");
  note_kernel("kl_div", {&student, &teacher}, {&loss_rows, &lse_s, &lse_t});
  return d;
}

LossDims kl_backward_args(DeviceType on, const Tensor& student, const Tensor& teacher,
                          float temperature, const Tensor& lse_s, const Tensor& lse_t,
                          const Tensor& gloss_rows, const Tensor& gstudent) {
  const char* k = "kl_div_backward";
  LossDims d = loss_logits(k, on, student, "student");
  loss_like(k, on, teacher, student, "teacher");
  MOKD_CHECK(temperature > 0.f, k, ": temperature must be > 0, got ", temperature);
  loss_rows_arg(k, on, lse_s, d.B, "lse_student");
  loss_rows_arg(k, on, lse_t, d.B, "lse_teacher");
  loss_grad_rows(k, on, gloss_rows, d.B);
  loss_like(k, on, gstudent, student, "grad_student");
  note_kernel("kl_div_backward", {&student, &teacher, &lse_s, &lse_t, &gloss_rows}, {&gstudent});
  return d;
}

// ---- input pipeline ----

ImageBatchDims prepare_images_args(DeviceType on, const Tensor& pixels, const Tensor& table,
                                   const ImageBatchParams& p, const Tensor& out) {
  const char* k = "prepare_images";
  expect_on(pixels, on, k, "pixels");
  MOKD_CHECK(pixels.dtype() == DType::U8 && pixels.dim() == 4, k,
             ": pixels must be u8 [N, H, W, C], got ", pixels.str());
  ImageBatchDims d{pixels.size(0), pixels.size(1), pixels.size(2), pixels.size(3), {}};
  expect_f32(table, on, k, "table");
  MOKD_CHECK(table.numel() == d.c * 256, k, ": table must hold 256 values per channel (", d.c * 256,
             "), got ", table.str());
  expect_f32(out, on, k, "out");
  MOKD_CHECK(out.shape() == pixels.shape(), k, ": out ", out.str(),
             " must have the shape of pixels ", pixels.str());
  MOKD_CHECK(p.num_boxes >= 0 && (p.num_boxes == 0 || p.boxes), k, ": ", p.num_boxes,
             " erase boxes without data");
  MOKD_CHECK(p.num_boxes == 0 || d.c <= kEraseMaxChannels, k, ": erasing takes at most ",
             kEraseMaxChannels, " channels, the images have ", d.c);
  d.first_box.assign(static_cast<size_t>(d.n + 1), 0);
  int64_t prev = 0;
  for (int64_t b = 0; b < p.num_boxes; ++b) {
    const EraseBox& e = p.boxes[b];
    MOKD_CHECK(e.sample >= prev && e.sample < d.n, k, ": erase box ", b, " is for sample ",
               e.sample, "; boxes must be grouped by sample in increasing order, in [0, ", d.n,
               ")");
    MOKD_CHECK(e.top >= 0 && e.left >= 0 && e.height >= 0 && e.width >= 0 &&
                   e.top + e.height <= d.h && e.left + e.width <= d.w,
               k, ": erase box ", b, " (top ", e.top, ", left ", e.left, ", ", e.height, " x ",
               e.width, ") is not inside the ", d.h, " x ", d.w, " image");
    prev = e.sample;
    ++d.first_box[static_cast<size_t>(e.sample) + 1];
  }
  for (int64_t i = 0; i < d.n; ++i) d.first_box[i + 1] += d.first_box[i];
  const MixSpec& m = p.mix;
  MOKD_CHECK(m.mode == MixMode::None || m.mode == MixMode::Blend || m.mode == MixMode::Cut, k,
             ": unknown mix mode ", static_cast<int>(m.mode));
  MOKD_CHECK(
      m.mode != MixMode::Cut || (m.top >= 0 && m.left >= 0 && m.height >= 0 && m.width >= 0 &&
                                 m.top + m.height <= d.h && m.left + m.width <= d.w),
      k, ": cutmix box (top ", m.top, ", left ", m.left, ", ", m.height, " x ", m.width,
      ") is not inside the ", d.h, " x ", d.w, " image");
  note_kernel("prepare_images", {&pixels, &table}, {&out});
  return d;
}

// ---- optimizer updates ----

namespace {

void same_size(const std::string& k, const Tensor& t, const Tensor& p, const char* arg) {
  MOKD_CHECK(t.numel() == p.numel(), k, ": ", arg, " ", t.str(), " does not match param ", p.str());
}

}  // namespace

namespace {
// A multi-tensor update names one entry ("adam_update_multi entry 3"): its kernel is the first
// word.
const char* kernel_family(const std::string& kernel) {
  for (const char* k : {"adam_update_multi", "adam_update", "sgd_update_multi", "sgd_update"})
    if (kernel.rfind(k, 0) == 0) return k;
  return "optimizer";
}
}  // namespace

namespace {
// The param's bf16 copy, when the update keeps one: the written tensor, or null.
const Tensor* weight_copy(DeviceType on, const std::string& kernel, const Tensor& p,
                          const Tensor& p_bf16) {
  if (!p_bf16.defined()) return nullptr;
  MOKD_CHECK(p_bf16.dtype() == DType::BF16 && p_bf16.device().type == on &&
                 p_bf16.is_contiguous() && p_bf16.numel() == p.numel(),
             kernel, ": the bf16 copy ", p_bf16.str(), " must be contiguous bf16 on ",
             device_type_name(on), " shaped like the param ", p.str());
  return &p_bf16;
}
}  // namespace

void adam_args(DeviceType on, const std::string& kernel, const Tensor& p, const Tensor& g,
               const Tensor& m, const Tensor& v, const AdamHyper& h, const Tensor& p_bf16) {
  const char* k = kernel.c_str();
  expect_f32(p, on, k, "param");
  expect_f32(g, on, k, "grad");
  expect_f32(m, on, k, "exp_avg");
  expect_f32(v, on, k, "exp_avg_sq");
  same_size(kernel, g, p, "grad");
  same_size(kernel, m, p, "exp_avg");
  same_size(kernel, v, p, "exp_avg_sq");
  MOKD_CHECK(h.step >= 1, kernel, ": step must be >= 1 (1-based, after increment), got ", h.step);
  note_kernel(kernel_family(kernel), {&p, &g, &m, &v},
              {&p, &m, &v, weight_copy(on, kernel, p, p_bf16)});
}

void sgd_args(DeviceType on, const std::string& kernel, const Tensor& p, const Tensor& g,
              const Tensor& buf, const SgdHyper& h, const Tensor& p_bf16) {
  const char* k = kernel.c_str();
  expect_f32(p, on, k, "param");
  expect_f32(g, on, k, "grad");
  same_size(kernel, g, p, "grad");
  if (h.momentum != 0.f) {  // without momentum the buffer is unused and may be undefined
    expect_f32(buf, on, k, "momentum_buffer");
    same_size(kernel, buf, p, "momentum_buffer");
  }
  note_kernel(kernel_family(kernel), {&p, &g, h.momentum != 0 ? &buf : nullptr},
              {&p, h.momentum != 0 ? &buf : nullptr, weight_copy(on, kernel, p, p_bf16)});
}

std::string entry_name(const char* kernel, size_t i) {
  return detail::concat(kernel, " entry ", i);
}

}  // namespace mokd
