// Error checks for the CUDA runtime, cuBLAS(Lt) and cuDNN: each failure becomes a mokd::CudaError
// (a mokd::Error) naming the call, file:line and the library's own error string. Kernel launches
// are checked with cudaGetLastError by check_launch(kernel name).
#pragma once
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "engine/error.h"

namespace mokd {

// Raised by the checks below; CudaBackend methods rethrow it as mokd::Error with the op name and
// the tensor shapes attached.
class CudaError : public Error {
 public:
  explicit CudaError(const std::string& what) : Error(what) {}
};

namespace cuda_detail {
[[noreturn]] inline void fail(const char* lib, const char* err, const char* expr, const char* file,
                              int line) {
  throw CudaError(detail::concat(lib, " error: ", err, " in ", expr, " at ", file, ":", line));
}
}  // namespace cuda_detail

// Operations the CUDA backend queues on its stream: its own kernel launches (each checked by
// check_launch), cuBLASLt matmuls, cuDNN convolutions and device-to-device copies. Process-wide;
// `mokd_train benchmark` reports them per step.
inline std::atomic<uint64_t>& cuda_launch_counter() {
  static std::atomic<uint64_t> n{0};
  return n;
}
inline void count_launch() { cuda_launch_counter().fetch_add(1, std::memory_order_relaxed); }

// After a kernel launch: counts it, and turns a launch failure (bad configuration, no kernel image
// for this GPU) into a CudaError naming the kernel.
inline void check_launch(const char* kernel) {
  count_launch();
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw CudaError(
        detail::concat("CUDA kernel ", kernel, " failed to launch: ", cudaGetErrorString(e)));
}

}  // namespace mokd

#define MOKD_CUDA_CHECK(expr)                                                                    \
  do {                                                                                           \
    cudaError_t mokd_e_ = (expr);                                                                \
    if (mokd_e_ != cudaSuccess) {                                                                \
      (void)cudaGetLastError(); /* clear a non-sticky error so the next call starts clean */     \
      ::mokd::cuda_detail::fail("CUDA", cudaGetErrorString(mokd_e_), #expr, __FILE__, __LINE__); \
    }                                                                                            \
  } while (0)

#define MOKD_CUBLAS_CHECK(expr)                                                            \
  do {                                                                                     \
    cublasStatus_t mokd_s_ = (expr);                                                       \
    if (mokd_s_ != CUBLAS_STATUS_SUCCESS)                                                  \
      ::mokd::cuda_detail::fail("cuBLAS", cublasGetStatusString(mokd_s_), #expr, __FILE__, \
                                __LINE__);                                                 \
  } while (0)

#define MOKD_CUDNN_CHECK(expr)                                                                     \
  do {                                                                                             \
    cudnnStatus_t mokd_s_ = (expr);                                                                \
    if (mokd_s_ != CUDNN_STATUS_SUCCESS)                                                           \
      ::mokd::cuda_detail::fail("cuDNN", cudnnGetErrorString(mokd_s_), #expr, __FILE__, __LINE__); \
  } while (0)
