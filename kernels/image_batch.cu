// Batch preparation on the GPU (engine/image_batch.h): one thread per output element computes
// the sample's normalised and erased value and, under mixup or cutmix, its flipped partner's,
// with the same functions as the CPU backend. The blend uses __fmul_rn / __fadd_rn so that no
// fused multiply-add changes its rounding. Memory traffic: reads each uint8 pixel once (twice
// under mixup), writes each f32 output once.
#include "engine/image_batch.h"
#include "kernels/common.cuh"
#include "kernels/launch.cuh"

namespace mokd::kernels {

namespace {

__global__ void prepare_images_kernel(const uint8_t* pixels, const float* table,
                                      const EraseBox* boxes, const int32_t* first_box, int64_t n,
                                      int64_t h, int64_t w, int64_t c, MixSpec mix, float* out) {
  const int64_t per = h * w * c, total = n * per;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = idx / per, r = idx % per;
    const int64_t y = r / (w * c), x = (r / c) % w, ch = r % c;
    const int64_t j = n - 1 - i;
    auto value = [&](int64_t s) {
      return erased_value(pixels, table, boxes, first_box[s], first_box[s + 1], h, w, c, s, y, x,
                          ch);
    };
    float v;
    if (mix.mode == MixMode::Blend) {
      v = __fadd_rn(__fmul_rn(value(i), mix.lam), __fmul_rn(value(j), mix.lam1));
    } else if (mix.mode == MixMode::Cut && y >= mix.top && y < mix.top + mix.height &&
               x >= mix.left && x < mix.left + mix.width) {
      v = value(j);
    } else {
      v = value(i);
    }
    out[idx] = v;
  }
}

}  // namespace

void prepare_images(const uint8_t* pixels, const float* table, const EraseBox* boxes,
                    const int32_t* first_box, int64_t n, int64_t h, int64_t w, int64_t c,
                    const MixSpec& mix, float* out, cudaStream_t stream) {
  const int64_t total = n * h * w * c;
  if (total == 0) return;
  prepare_images_kernel<<<grid_for(total), kThreads, 0, stream>>>(pixels, table, boxes, first_box,
                                                                  n, h, w, c, mix, out);
  check_launch("prepare_images");
}

}  // namespace mokd::kernels
