// Losses (scalars). Cross-entropy and the distillation KL run as fused backend kernels (one
// forward kernel writing a loss per row and the saved row log-sum-exps, a row reduction, and one
// backward kernel); smooth-L1 and MSE are composed from differentiable ops.
#include "engine/ops/common.h"

namespace mokd {

// engine/ops/elementwise.cpp: smooth-L1 of each element of d (0.5 d^2 / beta or |d| - beta / 2).
Tensor smooth_l1_elementwise(const Tensor& d, float beta);

namespace {

// Losses compute in f32: a bf16 input (an activation in the bf16 mode) is widened first (exact;
// its gradient goes back as bf16).
Tensor f32(const Tensor& t) {
  return t.defined() && t.dtype() == DType::BF16 ? cast(t, DType::F32) : t;
}

// logits [B, C] with B, C > 0.
void check_logits(const char* op, const Tensor& logits, const char* arg = "logits") {
  detail::check_float(op, logits, arg);
  MOKD_CHECK(logits.dim() == 2, op, ": ", arg, " must be [B, C], got ", logits.str());
  MOKD_CHECK(logits.size(0) > 0 && logits.size(1) > 0, op, ": ", arg,
             " must have a non-empty batch and class dim, got ", logits.str());
}

void check_same_shape(const char* op, const Tensor& a, const Tensor& b, const char* na,
                      const char* nb) {
  detail::check_pair(op, a, b);
  MOKD_CHECK(a.shape() == b.shape(), op, ": ", na, " ", shape_str(a.shape()), " and ", nb, " ",
             shape_str(b.shape()), " must have the same shape");
}

// scale * sum of the per-row losses, as a scalar (shape []).
Tensor scaled_row_sum(const Tensor& rows, float scale) {
  Tensor out = Tensor::empty({1}, rows.dtype(), rows.device());
  backend_for(rows).reduce_sum(rows, out, scale);
  return out.view({});
}

// mean_b -sum_c q log_softmax(logits) with q = (1 - s) t + s / C, t = one_hot(labels) (labels
// given) or the soft targets (differentiable when they require grad).
Tensor fused_cross_entropy(const char* op, const Tensor& logits, const Tensor* labels,
                           const Tensor& soft, float smoothing) {
  Tensor x = logits.contiguous();
  Tensor t = soft.defined() ? soft.contiguous() : Tensor();
  Tensor lab = labels ? labels->contiguous() : Tensor();
  const int64_t B = x.size(0);
  Tensor rows = Tensor::empty({B}, x.dtype(), x.device());
  Tensor lse = Tensor::empty({B}, x.dtype(), x.device());
  backend_for(x).cross_entropy(x, labels ? &lab : nullptr, t.defined() ? &t : nullptr, smoothing,
                               rows, lse);
  const float k = 1.f / static_cast<float>(B);
  Tensor out = scaled_row_sum(rows, k);
  const bool grad_x = logits.requires_grad();
  const bool grad_t = soft.defined() && soft.requires_grad();
  if (!needs_grad({&logits, &soft})) return out;
  Tensor sx = x.detach(), st = t.defined() ? t.detach() : Tensor(), sl = lse.detach();
  std::vector<Tensor> inputs{logits};
  if (soft.defined()) inputs.push_back(soft);
  record(op, out, inputs, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = grad_x ? detail::empty_like(sx) : Tensor();
    Tensor gt = grad_t ? detail::empty_like(st) : Tensor();
    // g is the scalar loss's gradient: the kernel reads it for every row (one element).
    backend_for(sx).cross_entropy_backward(
        sx, lab.defined() ? &lab : nullptr, st.defined() ? &st : nullptr, smoothing, sl,
        g.contiguous(), k, grad_x ? &gx : nullptr, grad_t ? &gt : nullptr);
    if (st.defined()) return {gx, gt};
    return {gx};
  });
  return out;
}

}  // namespace

// Hard labels with label smoothing s: targets q = (1 - s) one_hot + s / C, so
// loss = mean_b -sum_c q[b, c] log_softmax(logits)[b, c] (torch.nn.functional.cross_entropy).
// A label outside [0, C) throws naming cross_entropy, the label, its index and C.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing) {
  check_logits("cross_entropy", logits);
  MOKD_CHECK(labels.defined() && labels.dtype() == DType::I64 && labels.dim() == 1,
             "cross_entropy: labels must be i64 [B], got ",
             labels.defined() ? labels.str() : std::string("undefined"));
  MOKD_CHECK(labels.size(0) == logits.size(0), "cross_entropy: ", labels.size(0),
             " labels for logits ", shape_str(logits.shape()), " (expected ", logits.size(0), ")");
  MOKD_CHECK(labels.device() == logits.device(), "cross_entropy: labels ", labels.str(),
             " and logits ", logits.str(), " are on different devices");
  MOKD_CHECK(label_smoothing >= 0.f && label_smoothing < 1.f,
             "cross_entropy: label_smoothing must be in [0, 1), got ", label_smoothing);
  return fused_cross_entropy("cross_entropy", f32(logits), &labels, Tensor(), label_smoothing);
}

// Soft targets q [B, C]: mean_b -sum_c q log_softmax(logits). A target that requires grad gets
// its gradient too (-log_softmax / B).
Tensor cross_entropy_soft(const Tensor& logits, const Tensor& target_probs) {
  check_logits("cross_entropy_soft", logits);
  check_same_shape("cross_entropy_soft", f32(logits), f32(target_probs), "logits", "target_probs");
  return fused_cross_entropy("cross_entropy_soft", f32(logits), nullptr, f32(target_probs), 0.f);
}

// Distillation KL at temperature T: with p_t = softmax(teacher / T),
//   loss = T^2 / B * sum_{b,c} p_t (log p_t - log_softmax(student / T)),
// which is F.kl_div(log_softmax(s/T), softmax(t/T), reduction='batchmean') * T^2. Only the
// student receives a gradient (the teacher is a constant target, even if it requires grad); T^2
// keeps the gradient scale independent of T (Hinton et al.).
Tensor kl_div(const Tensor& student_in, const Tensor& teacher_in, float temperature) {
  const Tensor student_logits = f32(student_in), teacher_logits = f32(teacher_in);
  check_logits("kl_div", student_logits, "student_logits");
  check_same_shape("kl_div", student_logits, teacher_logits, "student_logits", "teacher_logits");
  MOKD_CHECK(temperature > 0.f, "kl_div: temperature must be > 0, got ", temperature);
  Tensor s = student_logits.contiguous(), t = teacher_logits.contiguous();
  const int64_t B = s.size(0);
  Tensor rows = Tensor::empty({B}, s.dtype(), s.device());
  Tensor lse_s = Tensor::empty({B}, s.dtype(), s.device());
  Tensor lse_t = Tensor::empty({B}, s.dtype(), s.device());
  backend_for(s).kl_div(s, t, temperature, rows, lse_s, lse_t);
  const float k = temperature * temperature / static_cast<float>(B);
  Tensor out = scaled_row_sum(rows, k);
  if (!needs_grad({&student_logits})) return out;
  Tensor ss = s.detach(), st = t.detach(), sls = lse_s.detach(), slt = lse_t.detach();
  record("kl_div", out, {student_logits}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gs = detail::empty_like(ss);
    backend_for(ss).kl_div_backward(ss, st, temperature, sls, slt, g.contiguous(), k, gs);
    return {gs};
  });
  return out;
}

// mean over elements of smooth_l1(a - b): 0.5 d^2 / beta where |d| < beta, |d| - beta / 2
// elsewhere (torch.nn.functional.smooth_l1_loss, reduction='mean').
Tensor smooth_l1(const Tensor& a_in, const Tensor& b_in, float beta) {
  const Tensor a = f32(a_in), b = f32(b_in);
  check_same_shape("smooth_l1", a, b, "a", "b");
  MOKD_CHECK(a.numel() > 0, "smooth_l1: empty inputs ", shape_str(a.shape()));
  MOKD_CHECK(beta > 0.f, "smooth_l1: beta must be > 0, got ", beta);
  return mean(smooth_l1_elementwise(sub(a, b), beta));
}

// mean over elements of (a - b)^2 (torch.nn.functional.mse_loss).
Tensor mse(const Tensor& a_in, const Tensor& b_in) {
  const Tensor a = f32(a_in), b = f32(b_in);
  check_same_shape("mse", a, b, "a", "b");
  MOKD_CHECK(a.numel() > 0, "mse: empty inputs ", shape_str(a.shape()));
  return mean(square(sub(a, b)));
}

}  // namespace mokd
