// CUDA's pinned host memory and upload fences (engine/cuda/pinned_host.cpp).
#pragma once
#include <cuda_runtime.h>

#include <memory>

#include "engine/pinned_host.h"

namespace mokd {

class CudaBackend;

// Registers the process's pinned host allocator (cudaHostAlloc blocks on the backend's GPU).
void cuda_register_pinned_host(const CudaBackend& backend);
// A fence that completes when the work queued on `stream` so far has finished.
std::shared_ptr<HostFence> cuda_record_fence(cudaStream_t stream);

}  // namespace mokd
