// CPU fused losses: cross-entropy (hard labels with label smoothing, or soft targets) and the
// distillation KL at a temperature, forward (a loss and the log-sum-exp of each row) and backward.
// f32 inputs, double row sums, OpenMP across rows. The reference for kernels/loss.cu.
#include <cmath>
#include <limits>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

// The first label outside [0, C) throws, naming it and its index (as one_hot does).
void check_labels(const int64_t* l, int64_t B, int64_t C, const Tensor& x) {
  for (int64_t b = 0; b < B; ++b)
    MOKD_CHECK(l[b] >= 0 && l[b] < C, "cross_entropy: label ", l[b], " at index ", b,
               " is outside [0, ", C, ") (logits ", shape_str(x.shape()), ")");
}

// log sum_i exp(scale * r[i]) in double (scale: 1 / T for the KL, 1 for cross-entropy).
double row_lse(const float* r, int64_t c, float scale) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < c; ++i) m = r[i] * scale > m ? r[i] * scale : m;
  double s = 0;
  for (int64_t i = 0; i < c; ++i) s += std::exp(r[i] * scale - m);
  return m + std::log(s);
}

// Gradient of row b: grad_scale * gloss[b] (gloss has B elements, or one for every row).
float row_grad(const Tensor& gloss, int64_t b, float grad_scale) {
  return grad_scale * gloss.data<float>()[gloss.numel() == 1 ? 0 : b];
}

}  // namespace

void CpuBackend::cross_entropy(const Tensor& logits, const Tensor* labels, const Tensor* soft,
                               float smoothing, Tensor& loss_rows, Tensor& lse) {
  const LossDims dims = ce_args(DeviceType::CPU, logits, labels, soft, smoothing, loss_rows, lse);
  const int64_t B = dims.B, C = dims.C;  // plain locals: OpenMP regions and lambdas capture them
  if (B == 0 || C == 0) return;
  const int64_t* pl = labels ? labels->data<int64_t>() : nullptr;
  if (pl) check_labels(pl, B, C, logits);
  const float* px = logits.data<float>();
  const float* pt = soft ? soft->data<float>() : nullptr;
  float* pr = loss_rows.data<float>();
  float* pe = lse.data<float>();
  // q_c = keep * t_c + off, as the composed op built it.
  const float off = smoothing / static_cast<float>(C), keep = 1.f - smoothing;
#pragma omp parallel for if (B * C > 32768)
  for (int64_t b = 0; b < B; ++b) {
    const float* x = px + b * C;
    double l = row_lse(x, C, 1.f);
    double qsum = 0, qx = 0;  // sum_c q_c and sum_c q_c x_c
    if (pt) {
      const float* t = pt + b * C;
      for (int64_t c = 0; c < C; ++c) {
        float q = keep * t[c] + off;
        qsum += q;
        qx += static_cast<double>(q) * x[c];
      }
    } else {
      double sx = 0;
      for (int64_t c = 0; c < C; ++c) sx += x[c];
      qsum = static_cast<double>(keep) + static_cast<double>(off) * C;
      qx = static_cast<double>(keep) * x[pl[b]] + static_cast<double>(off) * sx;
    }
    pr[b] = static_cast<float>(l * qsum - qx);
    pe[b] = static_cast<float>(l);
  }
}

void CpuBackend::cross_entropy_backward(const Tensor& logits, const Tensor* labels,
                                        const Tensor* soft, float smoothing, const Tensor& lse,
                                        const Tensor& gloss_rows, float grad_scale, Tensor* glogits,
                                        Tensor* gsoft) {
  const LossDims dims = ce_backward_args(DeviceType::CPU, logits, labels, soft, smoothing, lse,
                                         gloss_rows, glogits, gsoft);
  const int64_t B = dims.B, C = dims.C;
  if (B == 0 || C == 0) return;
  const int64_t* pl = labels ? labels->data<int64_t>() : nullptr;
  if (pl) check_labels(pl, B, C, logits);
  const float* px = logits.data<float>();
  const float* pt = soft ? soft->data<float>() : nullptr;
  const float* pe = lse.data<float>();
  float* pgx = glogits ? glogits->data<float>() : nullptr;
  float* pgt = gsoft ? gsoft->data<float>() : nullptr;
  const float off = smoothing / static_cast<float>(C), keep = 1.f - smoothing;
#pragma omp parallel for if (B * C > 32768)
  for (int64_t b = 0; b < B; ++b) {
    const float* x = px + b * C;
    const float* t = pt ? pt + b * C : nullptr;
    const float g = row_grad(gloss_rows, b, grad_scale), l = pe[b];
    if (pgx) {
      // d/dx_c (lse sum(q) - sum(q x)) = sum(q) softmax_c - q_c
      double qsum = static_cast<double>(keep) + static_cast<double>(off) * C;
      if (t) {
        qsum = 0;
        for (int64_t c = 0; c < C; ++c) qsum += keep * t[c] + off;
      }
      const float qs = static_cast<float>(qsum);
      float* gx = pgx + b * C;
      for (int64_t c = 0; c < C; ++c) {
        float q = t ? keep * t[c] + off : (c == pl[b] ? keep + off : off);
        gx[c] = g * (qs * std::exp(x[c] - l) - q);
      }
    }
    if (pgt) {
      // d/dt_c = keep * (lse - x_c) = -keep * log_softmax(x)_c
      float* gt = pgt + b * C;
      for (int64_t c = 0; c < C; ++c) gt[c] = g * keep * (l - x[c]);
    }
  }
}

void CpuBackend::kl_div(const Tensor& student, const Tensor& teacher, float temperature,
                        Tensor& loss_rows, Tensor& lse_s, Tensor& lse_t) {
  const LossDims dims =
      kl_args(DeviceType::CPU, student, teacher, temperature, loss_rows, lse_s, lse_t);
  const int64_t B = dims.B, C = dims.C;
  if (B == 0 || C == 0) return;
  const float inv_t = 1.f / temperature;
  const float* ps = student.data<float>();
  const float* pt = teacher.data<float>();
  float* pr = loss_rows.data<float>();
  float* pls = lse_s.data<float>();
  float* plt = lse_t.data<float>();
#pragma omp parallel for if (B * C > 32768)
  for (int64_t b = 0; b < B; ++b) {
    const float* s = ps + b * C;
    const float* t = pt + b * C;
    double ls = row_lse(s, C, inv_t), lt = row_lse(t, C, inv_t);
    // sum_c p_t (log p_t - log p_s); log p = x / T - lse exactly where p underflows to 0.
    double kl = 0;
    for (int64_t c = 0; c < C; ++c) {
      double log_pt = t[c] * inv_t - lt, log_ps = s[c] * inv_t - ls;
      kl += std::exp(log_pt) * (log_pt - log_ps);
    }
    pr[b] = static_cast<float>(kl);
    pls[b] = static_cast<float>(ls);
    plt[b] = static_cast<float>(lt);
  }
}

void CpuBackend::kl_div_backward(const Tensor& student, const Tensor& teacher, float temperature,
                                 const Tensor& lse_s, const Tensor& lse_t, const Tensor& gloss_rows,
                                 float grad_scale, Tensor& gstudent) {
  const LossDims dims = kl_backward_args(DeviceType::CPU, student, teacher, temperature, lse_s,
                                         lse_t, gloss_rows, gstudent);
  const int64_t B = dims.B, C = dims.C;
  if (B == 0 || C == 0) return;
  const float inv_t = 1.f / temperature;
  const float* ps = student.data<float>();
  const float* pt = teacher.data<float>();
  const float* pls = lse_s.data<float>();
  const float* plt = lse_t.data<float>();
  float* pg = gstudent.data<float>();
#pragma omp parallel for if (B * C > 32768)
  for (int64_t b = 0; b < B; ++b) {
    const float* s = ps + b * C;
    const float* t = pt + b * C;
    float* gs = pg + b * C;
    // d/ds_c sum p_t (log p_t - log p_s) = (p_s - p_t)_c / T
    const float g = row_grad(gloss_rows, b, grad_scale) * inv_t, ls = pls[b], lt = plt[b];
    for (int64_t c = 0; c < C; ++c)
      gs[c] = g * (std::exp(s[c] * inv_t - ls) - std::exp(t[c] * inv_t - lt));
  }
}

}  // namespace mokd
