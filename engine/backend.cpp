#include "engine/backend.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/kernel_args.h"
#include "engine/kernel_costs.h"

namespace mokd {

namespace {
Backend* g_backends[2] = {nullptr, nullptr};
}

Backend& cpu_backend();  // engine/cpu/cpu_backend.cpp

void register_backend(DeviceType t, Backend* b) { g_backends[static_cast<int>(t)] = b; }

namespace {
int g_cuda_count = 0;
void (*g_cuda_select)(int) = nullptr;
std::string (*g_cuda_identity)(int) = nullptr;
}  // namespace

int cuda_device_count() { return g_cuda_count; }

void register_cuda_devices(int count, void (*select)(int), std::string (*identity)(int)) {
  g_cuda_count = count;
  g_cuda_select = select;
  g_cuda_identity = identity;
}

std::string cuda_device_identity(int index) {
  return g_cuda_identity && index >= 0 && index < g_cuda_count ? g_cuda_identity(index) : "";
}

void use_cuda_device(int index) {
  MOKD_CHECK(g_cuda_select && index >= 0 && index < g_cuda_count, "cuda:", index,
             " is not available: this process sees ", g_cuda_count, " GPU(s)");
  g_cuda_select(index);
}

bool device_available(Device d) {
  return d.is_cpu() || g_backends[static_cast<int>(d.type)] != nullptr;
}

Backend& backend_for(Device d) {
  if (d.is_cpu()) return cpu_backend();
  Backend* b = g_backends[static_cast<int>(d.type)];
  MOKD_CHECK(b, "device ", d.str(), " is not available: this build or machine has no CUDA backend");
  return *b;
}

void Backend::gemm_bias(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c) {
  MOKD_CHECK(c.dim() == 2 && bias.numel() == c.size(-1), "gemm_bias: bias ", bias.str(),
             " must have one element per column of c ", c.str());
  // One kernel call as the ledger sees it, whichever backend runs it (engine/kernel_costs.h).
  note_kernel("gemm_bias", {&a, &b, &bias}, {&c},
              2.0 * static_cast<double>(c.size(0)) * c.size(1) * a.size(-1));
  NestedKernels nested;
  if (c.dtype() == DType::F32) {
    copy(bias.view({1, c.size(1)}).expand_view(c.shape()), c);
    gemm(a, b, c, false, true, 1.f, 1.f);
    return;
  }
  // A bf16 c: the (widened) bias joins the f32 accumulator and the sum is rounded once.
  Tensor cf = Tensor::empty(c.shape(), DType::F32, c.device());
  copy(bias.view({1, c.size(1)}).expand_view(c.shape()), cf);
  gemm(a, b, cf, false, true, 1.f, 1.f);
  copy(cf, c);
}

void Backend::bias_act(const Tensor& x, const Tensor& bias, const Tensor* residual, bool relu,
                       Tensor& y) {
  bias_act_args(device().type, x, bias, residual, y);
  NestedKernels nested;
  const int64_t c = bias.numel();
  const Shape rows = {x.numel() / std::max<int64_t>(c, 1), c};
  Tensor yv = y.view(rows);
  binary(BinaryOp::Add, x.view(rows), bias.view({1, c}).expand_view(rows), yv);
  if (residual) binary(BinaryOp::Add, yv, residual->view(rows), yv);
  if (relu) unary(UnaryOp::Relu, yv, yv, 0.f);
}

void Backend::bias_gelu(const Tensor& x, const Tensor& bias, Tensor& y) {
  const RowDims d = bias_gelu_args(device().type, x, bias, y);
  NestedKernels nested;
  const Shape rows = {d.rows, d.cols};
  Tensor yv = y.view(rows);
  binary(BinaryOp::Add, x.view(rows), bias.view({1, d.cols}).expand_view(rows), yv);
  unary(UnaryOp::Gelu, yv, yv, 0.f);
}

void Backend::bias_gelu_backward(const Tensor& g, const Tensor& x, const Tensor& bias, Tensor& gx,
                                 Tensor* gbias) {
  const RowDims d = bias_gelu_backward_args(device().type, g, x, bias, gx, gbias);
  NestedKernels nested;
  const Shape rows = {d.rows, d.cols};
  // The GELU's input, as the composition saves it (rounded to x's dtype).
  Tensor h = Tensor::empty(rows, x.dtype(), x.device());
  binary(BinaryOp::Add, x.view(rows), bias.view({1, d.cols}).expand_view(rows), h);
  Tensor gxv = gx.view(rows);
  unary_backward(UnaryOp::Gelu, h, g.view(rows), gxv, 0.f);
  if (!gbias) return;
  Tensor gbv = gbias->view({1, d.cols});
  if (d.rows == 0)
    gbv.fill_(0.0);
  else
    reduce_sum(gxv, gbv, 1.f);
}

void Backend::add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor* w,
                             const Tensor* b, float eps, Tensor& s, Tensor& n, Tensor& mean,
                             Tensor& rstd) {
  add_layer_norm_args(device().type, x, residual, w, b, s, n, mean, rstd);
  NestedKernels nested;
  binary(BinaryOp::Add, x, residual, s);
  if (s.numel() > 0) layer_norm(s, w, b, eps, n, mean, rstd);
}

void Backend::add_layer_norm_backward(const Tensor& gn, const Tensor* gs, const Tensor& s,
                                      const Tensor* w, const Tensor& mean, const Tensor& rstd,
                                      Tensor& gx, Tensor* gw, Tensor* gb) {
  add_layer_norm_backward_args(device().type, gn, gs, s, w, mean, rstd, gx, gw, gb);
  NestedKernels nested;
  if (s.numel() == 0) {
    if (gw) gw->fill_(0.0);
    if (gb) gb->fill_(0.0);
    return;
  }
  layer_norm_backward(gn, s, w, mean, rstd, gx, gw, gb);
  if (gs) binary(BinaryOp::Add, gx, *gs, gx);
}

const char* unary_name(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg:
      return "neg";
    case UnaryOp::Exp:
      return "exp";
    case UnaryOp::Log:
      return "log";
    case UnaryOp::Sqrt:
      return "sqrt";
    case UnaryOp::Square:
      return "square";
    case UnaryOp::Abs:
      return "abs";
    case UnaryOp::Relu:
      return "relu";
    case UnaryOp::Gelu:
      return "gelu";
    case UnaryOp::Scale:
      return "scale";
    case UnaryOp::AddScalar:
      return "add_scalar";
    case UnaryOp::SmoothL1:
      return "smooth_l1";
    case UnaryOp::ClipCoef:
      return "clip_coef";
    case UnaryOp::Reciprocal:
      return "reciprocal";
  }
  return "?";
}

}  // namespace mokd
