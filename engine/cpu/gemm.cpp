// STUB: to be replaced by the real kernels.
#include "engine/cpu/cpu_backend.h"

namespace mokd {

void CpuBackend::gemm(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b, float alpha,
            float beta) {
  MOKD_FAIL("cpu gemm: not implemented yet");
}

}  // namespace mokd
