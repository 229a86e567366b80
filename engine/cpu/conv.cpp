// STUB: to be replaced by the real kernels.
#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p,
              Tensor& y) {
  MOKD_FAIL("cpu conv2d: not implemented yet");
}

void CpuBackend::conv2d_backward_data(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                            Tensor& gx) {
  MOKD_FAIL("cpu conv2d_backward_data: not implemented yet");
}

void CpuBackend::conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                              Tensor& gw) {
  MOKD_FAIL("cpu conv2d_backward_weight: not implemented yet");
}

}  // namespace mokd
