// STUB: to be replaced by the real kernels.
#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h) {
  MOKD_FAIL("cpu adam_update: not implemented yet");
}

void CpuBackend::sgd_update(Tensor& p, const Tensor& g, Tensor& buf, const SgdHyper& h) {
  MOKD_FAIL("cpu sgd_update: not implemented yet");
}

}  // namespace mokd
