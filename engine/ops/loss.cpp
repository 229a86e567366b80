// STUB: to be replaced (losses).
#include "engine/ops/common.h"
namespace mokd {
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing) { MOKD_FAIL("cross_entropy: not implemented yet"); }
Tensor cross_entropy_soft(const Tensor& logits, const Tensor& target_probs) { MOKD_FAIL("cross_entropy_soft: not implemented yet"); }
Tensor kl_div(const Tensor& s, const Tensor& t, float temperature) { MOKD_FAIL("kl_div: not implemented yet"); }
Tensor smooth_l1(const Tensor& a, const Tensor& b, float beta) { MOKD_FAIL("smooth_l1: not implemented yet"); }
Tensor mse(const Tensor& a, const Tensor& b) { MOKD_FAIL("mse: not implemented yet"); }
}  // namespace mokd
