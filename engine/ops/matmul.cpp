// STUB: to be replaced (matmul, linear).
#include "engine/ops/common.h"
namespace mokd {
Tensor matmul(const Tensor& a, const Tensor& b) { MOKD_FAIL("matmul: not implemented yet"); }
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b) { MOKD_FAIL("linear: not implemented yet"); }
}  // namespace mokd
