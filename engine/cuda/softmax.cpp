// CUDA softmax, log-softmax (forward and backward) and logsumexp over the last dim: the shared
// contracts, then launches of kernels/softmax.cu.
#include "engine/cuda/cuda_backend.h"

#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

void CudaBackend::softmax(const Tensor& x, Tensor& y, bool log) {
  const RowDims d = softmax_args(DeviceType::CUDA, x, y, log);
  cuda_guarded(log ? "log_softmax" : "softmax", {&x, &y},
               [&] { kernels::softmax(cf(x), mf(y), d.rows, d.cols, log, stream()); });
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  const RowDims d = softmax_backward_args(DeviceType::CUDA, y, gy, gx, log);
  cuda_guarded(log ? "log_softmax_backward" : "softmax_backward", {&y, &gy, &gx}, [&] {
    kernels::softmax_backward(cf(y), cf(gy), mf(gx), d.rows, d.cols, log, stream());
  });
}

void CudaBackend::logsumexp(const Tensor& x, Tensor& out) {
  const RowDims d = logsumexp_args(DeviceType::CUDA, x, out);
  cuda_guarded("logsumexp", {&x, &out},
               [&] { kernels::logsumexp(cf(x), mf(out), d.rows, d.cols, stream()); });
}

}  // namespace mokd
