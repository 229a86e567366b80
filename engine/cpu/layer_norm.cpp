// STUB: to be replaced by the real kernels.
#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y,
                  Tensor& mean, Tensor& rstd) {
  MOKD_FAIL("cpu layer_norm: not implemented yet");
}

void CpuBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* w, const Tensor& mean,
                           const Tensor& rstd, Tensor& gx, Tensor* gw, Tensor* gb) {
  MOKD_FAIL("cpu layer_norm_backward: not implemented yet");
}

}  // namespace mokd
