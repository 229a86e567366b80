// CUDA caching allocator: binned free lists, OOM retry after emptying the cache, poison fills.
#include "engine/cuda/caching_allocator.h"

#include <cstdlib>
#include <cstring>

#include "engine/cuda/check.h"
#include "engine/host_sync.h"

namespace mokd {

CudaCachingAllocator::CudaCachingAllocator(int device) : device_(device) {}

void CudaCachingAllocator::set_device(int device) {
  std::lock_guard<std::mutex> lock(mu_);
  MOKD_CHECK(device == device_ || reserved_ == 0, "cuda allocator: cannot move to cuda:", device,
             " after allocating on cuda:", device_);
  device_ = device;
}

bool CudaCachingAllocator::poison() const {
  // Read at the first allocation (not at registration), so a test can setenv() before it.
  static const bool on = [] {
    const char* p = std::getenv("MOKD_CUDA_POISON");
    return p && *p && std::strcmp(p, "0") != 0;
  }();
  return on;
}

size_t CudaCachingAllocator::round_size(size_t n) {
  if (n == 0) return 0;
  constexpr size_t kSmall = 512, kMiB = size_t(1) << 20;
  if (n <= kMiB) return (n + kSmall - 1) / kSmall * kSmall;
  // Largest power of two <= n, then round up to a quarter of it.
  size_t pow2 = size_t(1) << (63 - __builtin_clzll(static_cast<unsigned long long>(n)));
  size_t step = pow2 / 4;
  return (n + step - 1) / step * step;
}

void* CudaCachingAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  const size_t bin = round_size(nbytes);
  MOKD_CHECK(bin >= nbytes, "cuda allocator: request of ", nbytes, " bytes is too large");
  void* p = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bin);
    if (it != free_.end() && !it->second.empty()) {
      p = it->second.back();
      it->second.pop_back();
      cached_ -= bin;
    } else {
      cudaError_t e = cudaMalloc(&p, bin);
      if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        // Cached blocks of other sizes may be what is missing: give them back and retry once.
        empty_cache_locked();
        e = cudaMalloc(&p, bin);
      }
      if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        (void)cudaMemGetInfo(&free_b, &total_b);
        (void)cudaGetLastError();
        MOKD_FAIL("cuda allocator: out of memory allocating ", nbytes, " bytes on cuda:", device_,
                  " (", bytes_in_use(), " bytes in use by tensors, ", reserved_,
                  " bytes reserved, device free ", free_b, " of ", total_b,
                  "): ", cudaGetErrorString(e));
      }
      ++malloc_calls_;
      reserved_ += bin;
    }
    live_[p] = bin;
    note_alloc(nbytes);
  }
  if (poison()) MOKD_CUDA_CHECK(cudaMemsetAsync(p, 0xFF, bin, cuda_compute_stream()));
  return p;
}

void CudaCachingAllocator::deallocate(void* p, size_t nbytes) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(p);
  if (it == live_.end()) return;  // not ours: never free foreign pointers
  size_t bin = it->second;
  live_.erase(it);
  free_[bin].push_back(p);
  cached_ += bin;
  note_free(nbytes);
}

void CudaCachingAllocator::empty_cache_locked() {
  if (cached_ == 0) return;
  // Blocks may still be read by queued kernels; cudaFree waits for the device, but be explicit.
  note_host_sync("empty_cache");
  (void)cudaDeviceSynchronize();
  for (auto& [bin, blocks] : free_) {
    for (void* p : blocks) {
      (void)cudaFree(p);
      reserved_ -= bin;
    }
    blocks.clear();
  }
  free_.clear();
  cached_ = 0;
  (void)cudaGetLastError();
}

void CudaCachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(mu_);
  empty_cache_locked();
}

size_t CudaCachingAllocator::bytes_cached() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cached_;
}

size_t CudaCachingAllocator::bytes_reserved() const {
  std::lock_guard<std::mutex> lock(mu_);
  return reserved_;
}

}  // namespace mokd
