// STUB: to be replaced by the real kernels.
#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  MOKD_FAIL("cpu max_pool2d: not implemented yet");
}

void CpuBackend::max_pool2d_backward(const Tensor& gy, const Tensor& argmax, Tensor& gx) {
  MOKD_FAIL("cpu max_pool2d_backward: not implemented yet");
}

void CpuBackend::avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  MOKD_FAIL("cpu avg_pool2d: not implemented yet");
}

void CpuBackend::avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) {
  MOKD_FAIL("cpu avg_pool2d_backward: not implemented yet");
}

}  // namespace mokd
