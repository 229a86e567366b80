// STUB: to be replaced by the real kernels.
#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::batch_norm_train(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean,
                        Tensor& running_var, float momentum, float eps, Tensor& y,
                        Tensor& save_mean, Tensor& save_invstd) {
  MOKD_FAIL("cpu batch_norm_train: not implemented yet");
}

void CpuBackend::batch_norm_eval(const Tensor& x, const Tensor& w, const Tensor& b,
                       const Tensor& running_mean, const Tensor& running_var, float eps,
                       Tensor& y) {
  MOKD_FAIL("cpu batch_norm_eval: not implemented yet");
}

void CpuBackend::batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w, const Tensor& mean,
                           const Tensor& invstd, bool training, Tensor& gx, Tensor& gw,
                           Tensor& gb) {
  MOKD_FAIL("cpu batch_norm_backward: not implemented yet");
}

}  // namespace mokd
