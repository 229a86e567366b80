// CUDA layer norm over the last dim (optional weight and bias), forward and backward: the shared
// contracts, then launches of kernels/layer_norm.cu. x, y, gy, gx f32 or bf16 activations; weight,
// bias, statistics and parameter gradients f32.
#include "engine/cuda/cuda_backend.h"

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

void CudaBackend::layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps,
                             Tensor& y, Tensor& mean, Tensor& rstd) {
  const RowDims dims = layer_norm_args(DeviceType::CUDA, x, w, b, y, mean, rstd);
  const int64_t d = dims.cols, rows = dims.rows;
  cuda_guarded("layer_norm", {&x, w, b, &y}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::layer_norm(cp<T>(x), cf_opt(w), cf_opt(b), eps, mp<T>(y), mf(mean), mf(rstd), rows,
                          d, stream());
    });
  });
}

void CudaBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* w,
                                      const Tensor& mean, const Tensor& rstd, Tensor& gx,
                                      Tensor* gw, Tensor* gb) {
  const RowDims dims = layer_norm_backward_args(DeviceType::CUDA, gy, x, w, mean, rstd, gx, gw, gb);
  const int64_t d = dims.cols, rows = dims.rows;
  cuda_guarded("layer_norm_backward", {&gy, &x, w, &gx}, [&] {
    Tensor part = scratch((gw || gb) ? kernels::layer_norm_partials_size(rows, d) : 1);
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::layer_norm_backward(cp<T>(gy), cp<T>(x), cf_opt(w), cf(mean), cf(rstd), mp<T>(gx),
                                   mf_opt(gw), mf_opt(gb), rows, d,
                                   static_cast<double*>(part.raw_data()), stream());
    });
  });
}

}  // namespace mokd
