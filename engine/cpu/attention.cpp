// STUB: to be replaced by the real kernels.
#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale, Tensor& out,
                 Tensor& lse) {
  MOKD_FAIL("cpu attention: not implemented yet");
}

void CpuBackend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& lse, const Tensor& gout, float scale, Tensor& gq,
                          Tensor& gk, Tensor& gv) {
  MOKD_FAIL("cpu attention_backward: not implemented yet");
}

}  // namespace mokd
