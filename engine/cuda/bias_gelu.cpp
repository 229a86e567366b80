// CUDA bias_gelu (engine/backend.h): the shared contract, then kernels/bias_gelu.cu, when
// cuda_fused_epilogues(); otherwise Backend's composition (an add and a GELU pass; the GELU's
// backward and a column reduction). Also where the backend says whether it fuses epilogues.
#include "engine/cuda/cuda_backend.h"

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

bool CudaBackend::fuses_epilogues() const { return cuda_fused_epilogues(); }

void CudaBackend::bias_gelu(const Tensor& x, const Tensor& bias, Tensor& y) {
  if (!cuda_fused_epilogues()) return Backend::bias_gelu(x, bias, y);
  const RowDims d = bias_gelu_args(DeviceType::CUDA, x, bias, y);
  cuda_guarded("bias_gelu", {&x, &bias, &y}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::bias_gelu(cp<T>(x), cf(bias), mp<T>(y), d.rows, d.cols, stream());
    });
  });
}

void CudaBackend::bias_gelu_backward(const Tensor& g, const Tensor& x, const Tensor& bias,
                                     Tensor& gx, Tensor* gbias) {
  if (!cuda_fused_epilogues()) return Backend::bias_gelu_backward(g, x, bias, gx, gbias);
  const RowDims d = bias_gelu_backward_args(DeviceType::CUDA, g, x, bias, gx, gbias);
  cuda_guarded("bias_gelu_backward", {&g, &x, &bias, &gx, gbias}, [&] {
    Tensor part = scratch(gbias ? kernels::bias_gelu_partials_size(d.rows, d.cols) : 1);
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::bias_gelu_backward(cp<T>(g), cp<T>(x), cf(bias), mp<T>(gx), mf_opt(gbias), d.rows,
                                  d.cols, static_cast<double*>(part.raw_data()), stream());
    });
  });
}

}  // namespace mokd
