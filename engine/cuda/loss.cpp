// CUDA fused losses, as engine/cpu/loss.cpp: cross-entropy (labels or soft targets) and the
// distillation KL, forward and backward; the shared contracts (ce_args, kl_args, ...), then
// launches of kernels/loss.cu. one_hot lives in elementwise.cpp, as on the CPU.
#include <string>

#include "engine/cuda/cuda_backend.h"
#include "engine/kernel_args.h"
#include "kernels/launch.cuh"  // kernels::fill
#include "kernels/loss.cuh"

namespace mokd {

namespace {

const int64_t* labels_ptr(const Tensor* t) {
  return t ? static_cast<const int64_t*>(t->raw_data()) : nullptr;
}

}  // namespace

void CudaBackend::cross_entropy(const Tensor& logits, const Tensor* labels, const Tensor* soft,
                                float smoothing, Tensor& loss_rows, Tensor& lse) {
  const char* k = "cross_entropy";
  const LossDims dims = ce_args(DeviceType::CUDA, logits, labels, soft, smoothing, loss_rows, lse);
  const int64_t B = dims.B, C = dims.C;  // plain locals: OpenMP regions and lambdas capture them
  if (B == 0 || C == 0) return;
  const std::string context = " (logits " + shape_str(logits.shape()) + ")";
  int64_t* slot = labels ? deferred_label_check(k, *labels, B, C, context) : nullptr;
  int64_t bad = B;
  cuda_guarded(k, {&logits, labels, soft, &loss_rows, &lse}, [&] {
    Tensor flag;
    int64_t* flag_ptr = slot;
    if (labels && !slot) {
      flag = Tensor::empty({1}, DType::I64, device());
      kernels::fill(flag.raw_data(), DType::I64, static_cast<double>(B), 1, stream());
      flag_ptr = static_cast<int64_t*>(flag.raw_data());
    }
    kernels::cross_entropy(cf(logits), labels_ptr(labels), cf_opt(soft), smoothing, B, C,
                           mf(loss_rows), mf(lse), flag_ptr, stream());
    // As one_hot: one small synchronous read, so a bad label throws here, as on the CPU (unless
    // the check is deferred to check_deferred()).
    if (flag.defined()) copy_to_host(&bad, flag.raw_data(), sizeof(bad));
  });
  if (bad < B) {
    int64_t label = 0;
    copy_to_host(&label, labels_ptr(labels) + bad, sizeof(label));
    MOKD_FAIL("cross_entropy: label ", label, " at index ", bad, " is outside [0, ", C, ")",
              context);
  }
}

void CudaBackend::cross_entropy_backward(const Tensor& logits, const Tensor* labels,
                                         const Tensor* soft, float smoothing, const Tensor& lse,
                                         const Tensor& gloss_rows, float grad_scale,
                                         Tensor* glogits, Tensor* gsoft) {
  const char* k = "cross_entropy_backward";
  const LossDims dims = ce_backward_args(DeviceType::CUDA, logits, labels, soft, smoothing, lse,
                                         gloss_rows, glogits, gsoft);
  const int64_t B = dims.B, C = dims.C;
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
  const LossDims dims =
      kl_args(DeviceType::CUDA, student, teacher, temperature, loss_rows, lse_s, lse_t);
  const int64_t B = dims.B, C = dims.C;
  if (B == 0 || C == 0) return;
  cuda_guarded(k, {&student, &teacher, &loss_rows}, [&] {
    kernels::kl_div(cf(student), cf(teacher), temperature, B, C, mf(loss_rows), mf(lse_s),
                    mf(lse_t), stream());
  });
}

void CudaBackend::kl_div_backward(const Tensor& student, const Tensor& teacher, float temperature,
                                  const Tensor& lse_s, const Tensor& lse_t,
                                  const Tensor& gloss_rows, float grad_scale, Tensor& gstudent) {
  const char* k = "kl_div_backward";
  const LossDims dims = kl_backward_args(DeviceType::CUDA, student, teacher, temperature, lse_s,
                                         lse_t, gloss_rows, gstudent);
  const int64_t B = dims.B, C = dims.C;
  if (B == 0 || C == 0) return;
  cuda_guarded(k, {&student, &teacher, &gloss_rows, &gstudent}, [&] {
    kernels::kl_div_backward(cf(student), cf(teacher), temperature, cf(lse_s), cf(lse_t),
                             cf(gloss_rows), gloss_rows.numel() == 1 && B != 1, grad_scale, B, C,
                             mf(gstudent), stream());
  });
}

}  // namespace mokd
