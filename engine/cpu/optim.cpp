// CPU optimizer updates: Adam/AdamW and SGD (momentum, dampening, nesterov, weight decay), in
// place, one tensor at a time or over a list (the multi forms check every entry first, then run the
// very same per-tensor code on each, so both paths agree bit for bit), plus the multi-tensor sum of
// squares and in-place scale used by gradient clipping.
//
// Each update follows torch.optim's single-tensor code path operation by operation (same order,
// f32 element math, scalar coefficients formed in double and rounded once to f32), so a CPU run
// reproduces PyTorch's trajectory to rounding.
#include <cmath>
#include <string>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

// torch.lerp: self + w (end - self) for |w| < 0.5, else end - (end - self)(1 - w).
inline float lerp(float self, float end, float w) {
  return std::fabs(w) < 0.5f ? self + w * (end - self) : end - (end - self) * (1.f - w);
}

// The update itself, on checked operands.
void adam_apply(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h,
                bf16* p16 = nullptr) {
  // Scalars as PyTorch forms them in Python (double), each rounded once when the f32 kernel
  // receives it.
  const double lr = h.lr, b1 = h.beta1, b2 = h.beta2, wd = h.weight_decay;
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(h.step));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(h.step));
  const float neg_step_size = static_cast<float>(-(lr / bc1));
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float decay = static_cast<float>(1.0 - lr * wd);  // AdamW: p *= 1 - lr wd
  const float wdf = h.weight_decay;                       // Adam: g += wd p
  const float w1 = static_cast<float>(1.0 - b1);
  const float beta2 = h.beta2;
  const float w2 = static_cast<float>(1.0 - b2);
  const float eps = h.eps;
  const bool has_wd = h.weight_decay != 0.f, decoupled = h.decoupled;

  float* pp = p.data<float>();
  const float* pg = g.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const int64_t n = p.numel();
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float pi = pp[i], gi = pg[i];
    if (has_wd) {
      if (decoupled)
        pi = pi * decay;
      else
        gi = gi + wdf * pi;
    }
    float mi = lerp(pm[i], gi, w1);
    float vi = pv[i] * beta2;
    vi = vi + w2 * gi * gi;
    float denom = std::sqrt(vi) / bc2_sqrt + eps;
    pm[i] = mi;
    pv[i] = vi;
    pp[i] = pi + neg_step_size * mi / denom;
    if (p16) p16[i] = store_as<bf16>(pp[i]);
  }
}

void sgd_apply(Tensor& p, const Tensor& g, Tensor& buf, const SgdHyper& h, bf16* p16 = nullptr) {
  const bool use_momentum = h.momentum != 0.f;
  const float wd = h.weight_decay, mom = h.momentum;
  const float keep = static_cast<float>(1.0 - static_cast<double>(h.dampening));
  const float neg_lr = -h.lr;
  const bool has_wd = wd != 0.f, first = h.first_step, nesterov = h.nesterov;

  float* pp = p.data<float>();
  const float* pg = g.data<float>();
  float* pb = use_momentum ? buf.data<float>() : nullptr;
  const int64_t n = p.numel();
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float gi = pg[i];
    if (has_wd) gi = gi + wd * pp[i];
    if (use_momentum) {
      // PyTorch: the buffer starts as the (decayed) gradient itself, undamped.
      float b = first ? gi : pb[i] * mom + keep * gi;
      pb[i] = b;
      gi = nesterov ? gi + mom * b : b;
    }
    pp[i] = pp[i] + neg_lr * gi;
    if (p16) p16[i] = store_as<bf16>(pp[i]);
  }
}

// "<kernel> entry <i>": names the list entry in a multi-tensor error.

}  // namespace

void CpuBackend::adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h) {
  adam_args(DeviceType::CPU, "adam_update", p, g, m, v, h);
  adam_apply(p, g, m, v, h);
}

void CpuBackend::sgd_update(Tensor& p, const Tensor& g, Tensor& buf, const SgdHyper& h) {
  sgd_args(DeviceType::CPU, "sgd_update", p, g, buf, h);
  sgd_apply(p, g, buf, h);
}

// Every entry is checked before any is updated, so a bad entry leaves the whole list unchanged.
void CpuBackend::adam_update_multi(const std::vector<AdamTensorRef>& list) {
  for (size_t i = 0; i < list.size(); ++i) {
    const AdamTensorRef& r = list[i];
    adam_args(DeviceType::CPU, entry_name("adam_update_multi", i), r.p, r.g, r.m, r.v, r.h,
              r.p_bf16);
  }
  for (const AdamTensorRef& r : list) {
    Tensor p = r.p, m = r.m, v = r.v;  // handles: the updates land in the shared storage
    adam_apply(p, r.g, m, v, r.h, r.p_bf16.defined() ? r.p_bf16.data<bf16>() : nullptr);
  }
}

void CpuBackend::sgd_update_multi(const std::vector<SgdTensorRef>& list) {
  for (size_t i = 0; i < list.size(); ++i) {
    const SgdTensorRef& r = list[i];
    sgd_args(DeviceType::CPU, entry_name("sgd_update_multi", i), r.p, r.g, r.buf, r.h, r.p_bf16);
  }
  for (const SgdTensorRef& r : list) {
    Tensor p = r.p, buf = r.buf;
    sgd_apply(p, r.g, buf, r.h, r.p_bf16.defined() ? r.p_bf16.data<bf16>() : nullptr);
  }
}

void CpuBackend::sum_squares_multi(const std::vector<const Tensor*>& xs, Tensor& out) {
  for (size_t i = 0; i < xs.size(); ++i)
    MOKD_CHECK(xs[i] != nullptr, "sum_squares_multi: entry ", i, " is null");
  // In list order, as a loop of sum_squares_accumulate calls would add them.
  for (const Tensor* x : xs) sum_squares_accumulate(*x, out);
}

void CpuBackend::scale_multi(const std::vector<Tensor*>& xs, const Tensor& s) {
  cpu_expect_f32(s, "scale_multi", "scale");
  MOKD_CHECK(s.numel() == 1, "scale_multi: scale must have one element, got ", s.str());
  for (size_t i = 0; i < xs.size(); ++i) {
    MOKD_CHECK(xs[i] != nullptr, "scale_multi: entry ", i, " is null");
    cpu_expect_f32(*xs[i], entry_name("scale_multi", i).c_str(), "x");
  }
  const float c = s.data<float>()[0];
  for (Tensor* x : xs) {
    float* px = x->data<float>();
    const int64_t n = x->numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) px[i] = px[i] * c;
  }
}

}  // namespace mokd
