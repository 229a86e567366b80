// CUDA add_layer_norm (engine/backend.h): the shared contract, then kernels/add_layer_norm.cu,
// when cuda_fused_epilogues(); otherwise Backend's composition (an add, then layer_norm;
// layer_norm_backward, then an add).
#include "engine/cuda/cuda_backend.h"

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

void CudaBackend::add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor* w,
                                 const Tensor* b, float eps, Tensor& s, Tensor& n, Tensor& mean,
                                 Tensor& rstd) {
  if (!cuda_fused_epilogues())
    return Backend::add_layer_norm(x, residual, w, b, eps, s, n, mean, rstd);
  const RowDims dims = add_layer_norm_args(DeviceType::CUDA, x, residual, w, b, s, n, mean, rstd);
  cuda_guarded("add_layer_norm", {&x, &residual, w, b, &s, &n}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::add_layer_norm(cp<T>(x), cp<T>(residual), cf_opt(w), cf_opt(b), eps, mp<T>(s),
                              mp<T>(n), mf(mean), mf(rstd), dims.rows, dims.cols, stream());
    });
  });
}

void CudaBackend::add_layer_norm_backward(const Tensor& gn, const Tensor* gs, const Tensor& s,
                                          const Tensor* w, const Tensor& mean, const Tensor& rstd,
                                          Tensor& gx, Tensor* gw, Tensor* gb) {
  if (!cuda_fused_epilogues())
    return Backend::add_layer_norm_backward(gn, gs, s, w, mean, rstd, gx, gw, gb);
  const RowDims dims =
      add_layer_norm_backward_args(DeviceType::CUDA, gn, gs, s, w, mean, rstd, gx, gw, gb);
  cuda_guarded("add_layer_norm_backward", {&gn, gs, &s, w, &gx}, [&] {
    Tensor part =
        scratch((gw || gb) ? kernels::add_layer_norm_partials_size(dims.rows, dims.cols) : 1);
    with_activation_type(s.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::add_layer_norm_backward(cp<T>(gn), gs ? cp<T>(*gs) : nullptr, cp<T>(s), cf_opt(w),
                                       cf(mean), cf(rstd), mp<T>(gx), mf_opt(gw), mf_opt(gb),
                                       dims.rows, dims.cols, static_cast<double*>(part.raw_data()),
                                       stream());
    });
  });
}

}  // namespace mokd
