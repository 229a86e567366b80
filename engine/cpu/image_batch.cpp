// CPU batch preparation (engine/image_batch.h): each sample normalised and erased, then the batch
// mixed with its flip in place, pair by pair, as timm's Mixup does it. Compiled without fused
// multiply-add (CMakeLists.txt) so that the blend is two rounded products and a rounded sum, as
// in PyTorch and in the CUDA kernel.
#include <algorithm>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_args.h"

namespace mokd {

void CpuBackend::prepare_images(const Tensor& pixels, const Tensor& table,
                                const ImageBatchParams& p, Tensor& out) {
  const ImageBatchDims d = prepare_images_args(DeviceType::CPU, pixels, table, p, out);
  const int64_t n = d.n, h = d.h, w = d.w, c = d.c, per = h * w * c;
  const uint8_t* px = static_cast<const uint8_t*>(pixels.raw_data());
  const float* tab = table.data<float>();
  float* o = out.data<float>();

#pragma omp parallel for if (n * per > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t first = d.first_box[i], last = d.first_box[i + 1];
    float* dst = o + i * per;
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t ch = 0; ch < c; ++ch)
          dst[(y * w + x) * c + ch] =
              erased_value(px, tab, p.boxes, first, last, h, w, c, i, y, x, ch);
  }

  const MixSpec& m = p.mix;
  if (m.mode == MixMode::Blend) {
#pragma omp parallel for if (n * per > 65536)
    for (int64_t i = 0; i < (n + 1) / 2; ++i) {
      float* a = o + i * per;
      float* b = o + (n - 1 - i) * per;
      for (int64_t k = 0; k < per; ++k) {
        const float va = a[k], vb = b[k];
        a[k] = va * m.lam + vb * m.lam1;
        b[k] = vb * m.lam + va * m.lam1;  // the middle sample of an odd batch: a == b, same value
      }
    }
  } else if (m.mode == MixMode::Cut) {
    for (int64_t i = 0; i < n / 2; ++i) {
      float* a = o + i * per;
      float* b = o + (n - 1 - i) * per;
      for (int64_t y = m.top; y < m.top + m.height; ++y)
        std::swap_ranges(a + (y * w + m.left) * c, a + (y * w + m.left + m.width) * c,
                         b + (y * w + m.left) * c);
    }
  }
}

}  // namespace mokd
