// Losses (scalars), composed from differentiable ops so their gradients come from autograd.
#include "engine/ops/common.h"

namespace mokd {

// engine/ops/elementwise.cpp: smooth-L1 of each element of d (0.5 d^2 / beta or |d| - beta / 2).
Tensor smooth_l1_elementwise(const Tensor& d, float beta);

namespace {

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

// -sum(q * log_softmax(logits)) / B for targets q [B, C] (q may be differentiable).
Tensor soft_target_ce(const Tensor& logits, const Tensor& q) {
  float inv_b = 1.f / static_cast<float>(logits.size(0));
  return scale(sum(mul(q, log_softmax(logits, -1))), -inv_b);
}

}  // namespace

// Hard labels with label smoothing s: targets q = (1 - s) one_hot + s / C, so
// loss = mean_b -sum_c q[b, c] log_softmax(logits)[b, c] (torch.nn.functional.cross_entropy).
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
  int64_t c = logits.size(1);
  float off = label_smoothing / static_cast<float>(c);
  Tensor q = detail::empty_as(logits, logits.shape());
  try {
    backend_for(logits).one_hot(labels, q, 1.f - label_smoothing + off, off);
  } catch (const Error& e) {  // e.g. a label outside [0, C): say which op it came from
    throw Error(std::string("cross_entropy: ") + e.what() + " (logits " +
                shape_str(logits.shape()) + ")");
  }
  return soft_target_ce(logits, q);
}

// Soft targets q [B, C]: mean_b -sum_c q log_softmax(logits). A target that requires grad gets
// its gradient too (-log_softmax / B).
Tensor cross_entropy_soft(const Tensor& logits, const Tensor& target_probs) {
  check_logits("cross_entropy_soft", logits);
  check_same_shape("cross_entropy_soft", logits, target_probs, "logits", "target_probs");
  return soft_target_ce(logits, target_probs);
}

// Distillation KL at temperature T: with p_t = softmax(teacher / T),
//   loss = T^2 / B * sum_{b,c} p_t (log p_t - log_softmax(student / T)),
// which is F.kl_div(log_softmax(s/T), softmax(t/T), reduction='batchmean') * T^2. The teacher
// side is computed under NoGrad, so only the student receives a gradient; T^2 keeps the gradient
// scale independent of T (Hinton et al.).
Tensor kl_div(const Tensor& student_logits, const Tensor& teacher_logits, float temperature) {
  check_logits("kl_div", student_logits, "student_logits");
  check_same_shape("kl_div", student_logits, teacher_logits, "student_logits", "teacher_logits");
  MOKD_CHECK(temperature > 0.f, "kl_div: temperature must be > 0, got ", temperature);
  float inv_t = 1.f / temperature;
  Tensor pt, log_pt;
  {
    NoGrad ng;
    Tensor tt = scale(teacher_logits, inv_t);
    pt = softmax(tt, -1);
    log_pt = log_softmax(tt, -1);  // not log(pt): exact where pt underflows to 0
  }
  Tensor ls = log_softmax(scale(student_logits, inv_t), -1);
  float k = temperature * temperature / static_cast<float>(student_logits.size(0));
  return scale(sum(mul(pt, sub(log_pt, ls))), k);
}

// mean over elements of smooth_l1(a - b): 0.5 d^2 / beta where |d| < beta, |d| - beta / 2
// elsewhere (torch.nn.functional.smooth_l1_loss, reduction='mean').
Tensor smooth_l1(const Tensor& a, const Tensor& b, float beta) {
  check_same_shape("smooth_l1", a, b, "a", "b");
  MOKD_CHECK(a.numel() > 0, "smooth_l1: empty inputs ", shape_str(a.shape()));
  MOKD_CHECK(beta > 0.f, "smooth_l1: beta must be > 0, got ", beta);
  return mean(smooth_l1_elementwise(sub(a, b), beta));
}

// mean over elements of (a - b)^2 (torch.nn.functional.mse_loss).
Tensor mse(const Tensor& a, const Tensor& b) {
  check_same_shape("mse", a, b, "a", "b");
  MOKD_CHECK(a.numel() > 0, "mse: empty inputs ", shape_str(a.shape()));
  return mean(square(sub(a, b)));
}

}  // namespace mokd
