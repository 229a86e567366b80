// STUB: to be replaced (scaled_dot_product_attention).
#include "engine/ops/common.h"
namespace mokd {
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale) { MOKD_FAIL("attention: not implemented yet"); }
}  // namespace mokd
