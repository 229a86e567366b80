// The input pipeline's last step as an op: allocates the f32 output beside the pixels and runs the
// device's prepare_images kernel. Nothing upstream needs a gradient, so nothing is recorded.
#include "engine/ops/common.h"

namespace mokd {

Tensor prepare_images(const Tensor& pixels, const Tensor& table, const ImageBatchParams& p) {
  MOKD_CHECK(pixels.defined() && table.defined(), "prepare_images: pixels and table must be given");
  MOKD_CHECK(table.device() == pixels.device(), "prepare_images: table on ", table.device().str(),
             " but pixels on ", pixels.device().str());
  Tensor out = Tensor::empty(pixels.shape(), DType::F32, pixels.device());
  backend_for(pixels.device()).prepare_images(pixels.contiguous(), table.contiguous(), p, out);
  return out;
}

}  // namespace mokd
