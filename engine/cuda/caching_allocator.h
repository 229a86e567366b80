// The CUDA caching allocator: device memory in size bins, reused without cudaFree in steady state.
//
// Every kernel of the CUDA backend runs on one compute stream, so a block freed by the host can be
// handed out again at once: any later use is queued behind the earlier ones on that stream.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "engine/storage.h"

namespace mokd {

// The CUDA backend's compute stream (engine/cuda/cuda_backend.cpp); poison fills are queued on it.
cudaStream_t cuda_compute_stream();

class CudaCachingAllocator final : public Allocator {
 public:
  explicit CudaCachingAllocator(int device);

  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) override;
  Device device() const override { return Device::cuda(device_); }
  // The GPU blocks come from (use_cuda_device, before any allocation).
  void set_device(int device);

  // Returns every cached (free) block to the driver.
  void empty_cache();
  size_t bytes_cached() const;    // free blocks held for reuse
  size_t bytes_reserved() const;  // all blocks obtained from cudaMalloc
  size_t cuda_malloc_calls() const { return malloc_calls_; }

  // The bin a request of n bytes is served from: multiples of 512 B up to 1 MiB, then four bins
  // per power of two (at most 25% slack).
  static size_t round_size(size_t n);

  // MOKD_CUDA_POISON=1 (read once, at the first allocation): every allocation is filled with 0xFF
  // bytes (NaN for f32/bf16), so a kernel that leaves an output element unwritten fails the
  // parity tests.
  bool poison() const;

 private:
  void empty_cache_locked();

  int device_;
  mutable std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // bin size -> free blocks
  std::unordered_map<void*, size_t> live_;               // handed-out block -> bin size
  size_t cached_ = 0, reserved_ = 0, malloc_calls_ = 0;
};

}  // namespace mokd
