// CUDA batch preparation: the shared contract, the erase boxes and their per-sample offsets
// uploaded in one small buffer, then one launch of kernels/image_batch.cu.
#include <cstring>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

void CudaBackend::prepare_images(const Tensor& pixels, const Tensor& table,
                                 const ImageBatchParams& p, Tensor& out) {
  const ImageBatchDims d = prepare_images_args(DeviceType::CUDA, pixels, table, p, out);
  if (out.numel() == 0) return;
  // [boxes][first_box], the boxes at offset 0 (8-byte aligned in an i64 buffer).
  const size_t box_bytes = static_cast<size_t>(p.num_boxes) * sizeof(EraseBox);
  const size_t first_bytes = d.first_box.size() * sizeof(int32_t);
  std::vector<char> host(box_bytes + first_bytes);
  if (box_bytes) std::memcpy(host.data(), p.boxes, box_bytes);
  std::memcpy(host.data() + box_bytes, d.first_box.data(), first_bytes);
  cuda_guarded("prepare_images", {&pixels, &table, &out}, [&] {
    Tensor buf = Tensor::empty({static_cast<int64_t>((host.size() + 7) / 8)}, DType::I64, device());
    copy_from_host(buf.raw_data(), host.data(), host.size());
    const char* base = static_cast<const char*>(buf.raw_data());
    kernels::prepare_images(static_cast<const uint8_t*>(pixels.raw_data()), mf(table),
                            reinterpret_cast<const EraseBox*>(base),
                            reinterpret_cast<const int32_t*>(base + box_bytes), d.n, d.h, d.w, d.c,
                            p.mix, mf(out), stream());
  });
}

}  // namespace mokd
