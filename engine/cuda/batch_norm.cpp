// CUDA batch norm over [rows, C] (NHWC flattened): training, evaluation and backward; the shared
// contracts, then launches of kernels/batch_norm.cu. x, y, gy, gx f32 or bf16 activations; every
// per-channel tensor f32.
#include "engine/cuda/cuda_backend.h"

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

void CudaBackend::batch_norm_train(const Tensor& x, const Tensor& w, const Tensor& b,
                                   Tensor& running_mean, Tensor& running_var, float momentum,
                                   float eps, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  const BnDims d = batch_norm_train_args(DeviceType::CUDA, x, w, b, running_mean, running_var, y,
                                         save_mean, save_invstd);
  cuda_guarded("batch_norm_train", {&x, &w, &y}, [&] {
    Tensor s = scratch(kernels::batch_norm_scratch_size(d.rows, d.C));
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::batch_norm_train(cp<T>(x), cf(w), cf(b), mf(running_mean), mf(running_var), momentum,
                                eps, mp<T>(y), mf(save_mean), mf(save_invstd), d.rows, d.C,
                                static_cast<double*>(s.raw_data()), stream());
    });
  });
}

void CudaBackend::batch_norm_eval(const Tensor& x, const Tensor& w, const Tensor& b,
                                  const Tensor& running_mean, const Tensor& running_var, float eps,
                                  Tensor& y) {
  const BnDims d = batch_norm_eval_args(DeviceType::CUDA, x, w, b, running_mean, running_var, y);
  cuda_guarded("batch_norm_eval", {&x, &w, &y}, [&] {
    Tensor s = scratch(d.C + 1);
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::batch_norm_eval(cp<T>(x), cf(w), cf(b), cf(running_mean), cf(running_var), eps,
                               mp<T>(y), d.rows, d.C, static_cast<double*>(s.raw_data()), stream());
    });
  });
}

void CudaBackend::batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                      const Tensor& mean, const Tensor& invstd, bool training,
                                      Tensor& gx, Tensor& gw, Tensor& gb) {
  const BnDims d = batch_norm_backward_args(DeviceType::CUDA, gy, x, w, mean, invstd, gx, gw, gb);
  cuda_guarded("batch_norm_backward", {&gy, &x, &w, &gx}, [&] {
    Tensor s = scratch(kernels::batch_norm_scratch_size(d.rows, d.C));
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::batch_norm_backward(cp<T>(gy), cp<T>(x), cf(w), cf(mean), cf(invstd), training,
                                   mp<T>(gx), mf(gw), mf(gb), d.rows, d.C,
                                   static_cast<double*>(s.raw_data()), stream());
    });
  });
}

}  // namespace mokd
