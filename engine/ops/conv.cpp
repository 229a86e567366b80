// STUB: to be replaced (conv2d, batch_norm2d, pooling).
#include "engine/ops/common.h"
namespace mokd {
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p) { MOKD_FAIL("conv2d: not implemented yet"); }
Tensor batch_norm2d(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean, Tensor& running_var, bool training, float momentum, float eps) { MOKD_FAIL("batch_norm2d: not implemented yet"); }
Tensor max_pool2d(const Tensor& x, const Pool2dParams& p) { MOKD_FAIL("max_pool2d: not implemented yet"); }
Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p) { MOKD_FAIL("avg_pool2d: not implemented yet"); }
Tensor global_avg_pool2d(const Tensor& x) { MOKD_FAIL("global_avg_pool2d: not implemented yet"); }
}  // namespace mokd
