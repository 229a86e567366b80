// CUDA backend: the fused losses (cross-entropy with labels or soft targets, distillation KL),
// forward and backward: operand checks (as the CPU reference in engine/cpu/loss.cpp) and
// launches of kernels/loss.cu on the compute stream.
#include <string>

#include "engine/cuda/cuda_backend.h"
#include "engine/kernel_args.h"
#include "kernels/launch.cuh"  // kernels::fill
#include "kernels/loss.cuh"

namespace mokd {

namespace {

const float* cf(const Tensor& t) { return static_cast<const float*>(t.raw_data()); }
float* mf(Tensor& t) { return static_cast<float*>(t.raw_data()); }
const float* cf_opt(const Tensor* t) { return t ? cf(*t) : nullptr; }
float* mf_opt(Tensor* t) { return t ? mf(*t) : nullptr; }
const int64_t* labels_ptr(const Tensor* t) {
  return t ? static_cast<const int64_t*>(t->raw_data()) : nullptr;
}

// x [B, C] f32 contiguous on the GPU.
void expect_logits(const char* k, const Tensor& x, const char* arg, int64_t& B, int64_t& C) {
  cuda_expect_f32(x, k, arg);
  MOKD_CHECK(x.dim() == 2, k, ": ", arg, " must be [B, C], got ", x.str());
  B = x.size(0);
  C = x.size(1);
}

void expect_like(const char* k, const Tensor& t, const Tensor& x, const char* arg) {
  cuda_expect_f32(t, k, arg);
  MOKD_CHECK(t.shape() == x.shape(), k, ": ", arg, " ", t.str(), " must match ", x.str());
  MOKD_CHECK(t.device() == x.device(), k, ": ", arg, " ", t.str(), " and ", x.str(),
             " are on different devices");
}

void expect_rows(const char* k, const Tensor& t, int64_t B, const char* arg) {
  cuda_expect_f32(t, k, arg);
  MOKD_CHECK(t.numel() == B, k, ": ", arg, " ", t.str(), " must have one element per row (", B,
             ")");
}

void expect_targets(const char* k, const Tensor& x, const Tensor* labels, const Tensor* soft,
                    float smoothing) {
  MOKD_CHECK((labels == nullptr) != (soft == nullptr), k,
             ": needs exactly one of labels and soft targets");
  if (labels) {
    cuda_expect_on_gpu(*labels, k, "labels");
    MOKD_CHECK(labels->dtype() == DType::I64 && labels->dim() == 1 &&
                   labels->size(0) == x.size(0) && labels->device() == x.device(),
               k, ": labels must be i64 [", x.size(0), "] on ", x.device().str(),
               " for logits ", x.str(), ", got ", labels->str());
  }
  if (soft) expect_like(k, *soft, x, "soft targets");
  MOKD_CHECK(smoothing >= 0.f && smoothing < 1.f, k, ": smoothing must be in [0, 1), got ",
             smoothing);
}

// gloss_rows: [B] or one element read for every row.
void expect_gloss(const char* k, const Tensor& g, int64_t B) {
  cuda_expect_f32(g, k, "grad_loss_rows");
  MOKD_CHECK(g.numel() == B || g.numel() == 1, k, ": grad_loss_rows ", g.str(), " must have ", B,
             " elements or one");
}

}  // namespace

void CudaBackend::cross_entropy(const Tensor& logits, const Tensor* labels, const Tensor* soft,
                                float smoothing, Tensor& loss_rows, Tensor& lse) {
  const char* k = "cross_entropy";
  int64_t B, C;
  expect_logits(k, logits, "logits", B, C);
  expect_targets(k, logits, labels, soft, smoothing);
  expect_rows(k, loss_rows, B, "loss_rows");
  expect_rows(k, lse, B, "lse");
  if (B == 0 || C == 0) return;
  int64_t bad = B;
  cuda_guarded(k, {&logits, labels, soft, &loss_rows, &lse}, [&] {
    Tensor flag;
    if (labels) {
      flag = Tensor::empty({1}, DType::I64, device());
      kernels::fill(flag.raw_data(), DType::I64, static_cast<double>(B), 1, stream());
    }
    kernels::cross_entropy(cf(logits), labels_ptr(labels), cf_opt(soft), smoothing, B, C,
                           mf(loss_rows), mf(lse),
                           labels ? static_cast<int64_t*>(flag.raw_data()) : nullptr, stream());
    // As one_hot: one small synchronous read, so a bad label throws here, as on the CPU.
    if (labels) copy_to_host(&bad, flag.raw_data(), sizeof(bad));
  });
  if (bad < B) {
    int64_t label = 0;
    copy_to_host(&label, labels_ptr(labels) + bad, sizeof(label));
    MOKD_FAIL("cross_entropy: label ", label, " at index ", bad, " is outside [0, ", C,
              ") (logits ", shape_str(logits.shape()), ")");
  }
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor* labels,
                                         const Tensor* soft, float smoothing, const Tensor& lse,
                                         const Tensor& gloss_rows, float grad_scale,
                                         Tensor* glogits, Tensor* gsoft) {
  const char* k = "cross_entropy_backward";
  int64_t B, C;
  expect_logits(k, logits, "logits", B, C);
  expect_targets(k, logits, labels, soft, smoothing);
  expect_rows(k, lse, B, "lse");
  expect_gloss(k, gloss_rows, B);
  if (glogits) expect_like(k, *glogits, logits, "grad_logits");
  if (gsoft) {
    MOKD_CHECK(soft, k, ": a soft-target gradient needs soft targets");
    expect_like(k, *gsoft, logits, "grad_soft");
  }
  if (B == 0 || C == 0) return;
  cuda_guarded(k, {&logits, soft, &lse, &gloss_rows, glogits, gsoft}, [&] {
    kernels::cross_entropy_backward(cf(logits), labels_ptr(labels), cf_opt(soft), smoothing,
                                    cf(lse), cf(gloss_rows), gloss_rows.numel() == 1 && B != 1,
                                    grad_scale, B, C, mf_opt(glogits), mf_opt(gsoft), stream());
  });
}

void CudaBackend::kl_div(const Tensor& student, const Tensor& teacher, float temperature,
                         Tensor& loss_rows, Tensor& lse_s, Tensor& lse_t) {
  const char* k = "kl_div";
  int64_t B, C;
  expect_logits(k, student, "student", B, C);
  expect_like(k, teacher, student, "teacher");
  MOKD_CHECK(temperature > 0.f, k, ": temperature must be > 0, got ", temperature);
  expect_rows(k, loss_rows, B, "loss_rows");
  expect_rows(k, lse_s, B, "lse_student");
  expect_rows(k, lse_t, B, "lse_teacher");
  if (B == 0 || C == 0) return;
  cuda_guarded(k, {&student, &teacher, &loss_rows}, [&] {
    kernels::kl_div(cf(student), cf(teacher), temperature, B, C, mf(loss_rows), mf(lse_s),
                    mf(lse_t), stream());
  });
}

void CudaBackend::kl_div_backward(const Tensor& student, const Tensor& teacher, float temperature,
                                  const Tensor& lse_s, const Tensor& lse_t,
                                  const Tensor& gloss_rows, float grad_scale,
                                  Tensor& gstudent) {
  const char* k = "kl_div_backward";
  int64_t B, C;
  expect_logits(k, student, "student", B, C);
  expect_like(k, teacher, student, "teacher");
  MOKD_CHECK(temperature > 0.f, k, ": temperature must be > 0, got ", temperature);
  expect_rows(k, lse_s, B, "lse_student");
  expect_rows(k, lse_t, B, "lse_teacher");
  expect_gloss(k, gloss_rows, B);
  expect_like(k, gstudent, student, "grad_student");
  if (B == 0 || C == 0) return;
  cuda_guarded(k, {&student, &teacher, &gloss_rows, &gstudent}, [&] {
    kernels::kl_div_backward(cf(student), cf(teacher), temperature, cf(lse_s), cf(lse_t),
                             cf(gloss_rows), gloss_rows.numel() == 1 && B != 1, grad_scale, B, C,
                             mf(gstudent), stream());
  });
}

}  // namespace mokd
