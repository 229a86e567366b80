// STUB: to be replaced (softmax family, layer_norm, dropout, drop_path).
#include "engine/ops/common.h"
namespace mokd {
Tensor softmax(const Tensor& x, int64_t dim) { MOKD_FAIL("softmax: not implemented yet"); }
Tensor log_softmax(const Tensor& x, int64_t dim) { MOKD_FAIL("log_softmax: not implemented yet"); }
Tensor logsumexp(const Tensor& x, int64_t dim, bool keepdim) { MOKD_FAIL("logsumexp: not implemented yet"); }
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps) { MOKD_FAIL("layer_norm: not implemented yet"); }
Tensor dropout(const Tensor& x, float p, bool training, Generator& gen) { MOKD_FAIL("dropout: not implemented yet"); }
Tensor drop_path(const Tensor& x, float p, bool training, Generator& gen) { MOKD_FAIL("drop_path: not implemented yet"); }
}  // namespace mokd
