// The CUDA side of pinned host memory (engine/pinned_host.h): page-locked blocks from
// cudaHostAlloc, and events as the fences that keep a block out of reuse while an upload from it
// is queued on the backend's stream. Registered with the backend at start-up; nothing is pinned
// until a loader with data.pin_memory asks.
#include "engine/cuda/pinned_host.h"

#include "engine/cuda/check.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/host_sync.h"

namespace mokd {

namespace {

class CudaPinnedSource final : public PinnedMemorySource {
 public:
  explicit CudaPinnedSource(const CudaBackend& backend) : backend_(backend) {}
  void* allocate(size_t nbytes) override {
    // The loader's worker threads allocate: the backend's GPU is made current in the calling
    // thread first, so no context is created on another GPU.
    void* p = nullptr;
    if (cudaSetDevice(backend_.device().index) != cudaSuccess ||
        cudaHostAlloc(&p, nbytes, cudaHostAllocPortable) != cudaSuccess) {
      (void)cudaGetLastError();  // no pinned memory to be had (limits, containers)
      return nullptr;
    }
    return p;
  }
  void deallocate(void* p) override {
    if (cudaFreeHost(p) != cudaSuccess) (void)cudaGetLastError();
  }

 private:
  const CudaBackend& backend_;
};

class CudaEventFence final : public HostFence {
 public:
  explicit CudaEventFence(cudaStream_t stream) {
    MOKD_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming));
    MOKD_CUDA_CHECK(cudaEventRecord(event_, stream));
  }
  ~CudaEventFence() override { (void)cudaEventDestroy(event_); }
  // Never throws: blocks are returned from Storage destructors. Any other error than "not ready"
  // means the context is broken (no copy is running any more); the next CUDA call reports it.
  bool done() noexcept override {
    const cudaError_t r = cudaEventQuery(event_);
    if (r != cudaSuccess) (void)cudaGetLastError();
    return r != cudaErrorNotReady;
  }
  void wait() noexcept override {
    note_host_sync("pinned host block reused while its upload was queued");
    if (cudaEventSynchronize(event_) != cudaSuccess) (void)cudaGetLastError();
  }

 private:
  cudaEvent_t event_ = nullptr;
};

}  // namespace

void cuda_register_pinned_host(const CudaBackend& backend) {
  // Leaked on purpose, as the backend: batches in static storage may outlive any destruction.
  static CudaPinnedSource* source = new CudaPinnedSource(backend);
  static PinnedHostAllocator* alloc = new PinnedHostAllocator(*source);
  register_pinned_host_allocator(alloc);
}

std::shared_ptr<HostFence> cuda_record_fence(cudaStream_t stream) {
  return std::make_shared<CudaEventFence>(stream);
}

}  // namespace mokd
