// CUDA max and average pooling in NHWC, with their backwards: the shared contracts, then launches
// of kernels/pool.cu. x, y, gy, gx f32 or bf16 activations; argmax i64.
#include "engine/cuda/cuda_backend.h"

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

namespace {
// The pooling kernels' geometry from the shared contract's.
kernels::PoolDims pool_dims(const PoolGeom& g, const Pool2dParams& p) {
  return {g.N,
          g.H,
          g.W,
          g.C,
          g.Ho,
          g.Wo,
          p.kernel_h,
          p.kernel_w,
          p.stride_h,
          p.stride_w,
          p.pad_h,
          p.pad_w,
          p.count_include_pad};
}
}  // namespace

void CudaBackend::max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  const kernels::PoolDims g = pool_dims(max_pool2d_args(DeviceType::CUDA, x, p, y, argmax), p);
  cuda_guarded("max_pool2d", {&x, &y}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::max_pool2d(cp<T>(x), mp<T>(y), static_cast<int64_t*>(argmax.raw_data()), g,
                          stream());
    });
  });
}

void CudaBackend::max_pool2d_backward(const Tensor& gy, const Tensor& argmax, Tensor& gx) {
  max_pool2d_backward_args(DeviceType::CUDA, gy, argmax, gx);
  cuda_guarded("max_pool2d_backward", {&gy, &gx}, [&] {
    // Indices outside gx are skipped here (the CPU reference throws for them).
    const auto* arg = static_cast<const int64_t*>(argmax.raw_data());
    if (gy.dtype() == DType::F32) {
      kernels::max_pool2d_backward(cf(gy), arg, mf(gx), gy.numel(), gx.numel(), nullptr, stream());
    } else {  // the sums in f32 scratch (two floats per double), each rounded once into gx
      Tensor acc = scratch((gx.numel() + 1) / 2);
      kernels::max_pool2d_backward(cp<bf16>(gy), arg, mp<bf16>(gx), gy.numel(), gx.numel(),
                                   static_cast<float*>(acc.raw_data()), stream());
    }
  });
}

void CudaBackend::avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const kernels::PoolDims g = pool_dims(avg_pool2d_args(DeviceType::CUDA, x, p, y), p);
  cuda_guarded("avg_pool2d", {&x, &y}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::avg_pool2d(cp<T>(x), mp<T>(y), g, stream());
    });
  });
}

void CudaBackend::avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) {
  const kernels::PoolDims g = pool_dims(avg_pool2d_backward_args(DeviceType::CUDA, gy, p, gx), p);
  cuda_guarded("avg_pool2d_backward", {&gy, &gx}, [&] {
    with_activation_type(gy.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::avg_pool2d_backward(cp<T>(gy), mp<T>(gx), g, stream());
    });
  });
}

}  // namespace mokd
