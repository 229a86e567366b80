// STUB: to be replaced by the real kernels.
#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::softmax(const Tensor& x, Tensor& y, bool log) {
  MOKD_FAIL("cpu softmax: not implemented yet");
}

void CpuBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  MOKD_FAIL("cpu softmax_backward: not implemented yet");
}

void CpuBackend::logsumexp(const Tensor& x, Tensor& out) {
  MOKD_FAIL("cpu logsumexp: not implemented yet");
}

}  // namespace mokd
