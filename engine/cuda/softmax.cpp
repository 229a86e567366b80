// CUDA softmax, log-softmax (forward and backward) and logsumexp over the last dim: the shared
// contracts, then launches of kernels/softmax.cu. Softmax and its backward take f32 or bf16
// activations; logsumexp f32.
#include "engine/cuda/cuda_backend.h"

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

void CudaBackend::softmax(const Tensor& x, Tensor& y, bool log) {
  const RowDims d = softmax_args(DeviceType::CUDA, x, y, log);
  cuda_guarded(log ? "log_softmax" : "softmax", {&x, &y}, [&] {
    with_activation_type(x.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::softmax(cp<T>(x), mp<T>(y), d.rows, d.cols, log, stream());
    });
  });
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  const RowDims d = softmax_backward_args(DeviceType::CUDA, y, gy, gx, log);
  cuda_guarded(log ? "log_softmax_backward" : "softmax_backward", {&y, &gy, &gx}, [&] {
    with_activation_type(y.dtype(), [&](auto t) {
      using T = decltype(t);
      kernels::softmax_backward(cp<T>(y), cp<T>(gy), mp<T>(gx), d.rows, d.cols, log, stream());
    });
  });
}

void CudaBackend::logsumexp(const Tensor& x, Tensor& out) {
  const RowDims d = logsumexp_args(DeviceType::CUDA, x, out);
  cuda_guarded("logsumexp", {&x, &out},
               [&] { kernels::logsumexp(cf(x), mf(out), d.rows, d.cols, stream()); });
}

}  // namespace mokd
