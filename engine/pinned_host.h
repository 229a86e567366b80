// Page-locked ("pinned") host memory for the data loader's batches. A GPU reads pinned memory by
// DMA while the host goes on, so a batch uploads straight from the buffer the loader's workers
// wrote, with neither a staging copy nor a synchronisation.
//
// The allocator recycles its blocks: a block freed by its last tensor goes back to a free list,
// and is handed out again only once every device read queued from it (a fence, add_fence) has
// completed, so a batch that is dropped while its upload is in flight is never overwritten under
// the DMA. A device backend supplies the memory and the fences (CUDA: cudaHostAlloc and events,
// engine/cuda); the bookkeeping here is plain C++, tested on the CPU with a fake source.
// Where the source cannot pin (more), blocks come from ordinary heap memory and is_pinned() says
// so: the backend's upload then takes its staging path.
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/storage.h"

namespace mokd {

// Completes when a device read queued from host memory has finished.
class HostFence {
 public:
  virtual ~HostFence() = default;
  // Neither throws (a block is returned from a tensor's destructor).
  virtual bool done() noexcept = 0;  // without blocking
  virtual void wait() noexcept = 0;  // blocks until done
};

// Where pinned bytes come from (the device backend's page-locking allocation).
class PinnedMemorySource {
 public:
  virtual ~PinnedMemorySource() = default;
  virtual void* allocate(size_t nbytes) = 0;  // null: nothing (more) can be pinned
  virtual void deallocate(void* p) = 0;
};

class PinnedHostAllocator final : public Allocator {
 public:
  // Free blocks beyond max_cached_bytes (all of them idle) go back to the source.
  explicit PinnedHostAllocator(PinnedMemorySource& source, size_t max_cached_bytes = size_t(1)
                                                                                     << 30);
  ~PinnedHostAllocator() override;

  void* allocate(size_t nbytes) override;
  void deallocate(void* p, size_t nbytes) override;
  Device device() const override { return Device::cpu(); }  // host memory, read as a CPU tensor

  // Whether [p, p + nbytes) lies inside one pinned block (an upload from it may be asynchronous).
  bool is_pinned(const void* p, size_t nbytes) const;
  // The block holding p (which is_pinned) is not reused before `fence` completes.
  void add_fence(const void* p, std::shared_ptr<HostFence> fence);

  struct Stats {
    int64_t pinned_blocks = 0;  // held from the source, in use or free
    size_t pinned_bytes = 0;    // their bytes
    int64_t source_allocations = 0;
    int64_t reuses = 0;          // allocations served by a recycled block
    int64_t fence_waits = 0;     // allocations that had to wait for a device read to finish
    int64_t heap_fallbacks = 0;  // allocations the source refused, served from the heap
  };
  Stats stats() const;

 private:
  struct Block {
    size_t bytes = 0;
    bool in_use = false;
    std::vector<std::shared_ptr<HostFence>> fences;  // device reads not known to be finished
  };
  static bool idle(Block& b);  // drops completed fences; true when none is left
  void trim_locked();

  PinnedMemorySource& source_;
  const size_t max_cached_;
  mutable std::mutex mu_;
  std::map<const char*, Block> blocks_;  // by start address
  size_t cached_bytes_ = 0;              // bytes of the free blocks
  Stats stats_;
};

// The process's pinned host allocator, registered by a device backend when it starts (null
// without one: a CPU-only build or machine).
PinnedHostAllocator* pinned_host_allocator();
void register_pinned_host_allocator(PinnedHostAllocator* a);

// Where host buffers bound for `device` belong: the pinned allocator when `pin` is set, the device
// is not the CPU and a pinned allocator is registered; the CPU allocator otherwise.
Allocator& host_staging_allocator(Device device, bool pin);

}  // namespace mokd
