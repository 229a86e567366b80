// Storage: one allocation of bytes on one device, shared by every tensor that views it.
// The allocator that made it frees it when the last view goes away.
#pragma once
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "engine/dtype.h"

namespace mokd {

// Where bytes come from. CPU: 64-byte aligned heap memory. CUDA (engine/cuda): a caching
// allocator, so a steady-state step makes no cudaMalloc/cudaFree.
class Allocator {
 public:
  virtual ~Allocator() = default;
  virtual void* allocate(size_t nbytes) = 0;
  virtual void deallocate(void* p, size_t nbytes) = 0;
  virtual Device device() const = 0;

  // Bytes handed out and not yet returned, and the high-water mark since reset_peak().
  // Atomic: tensors may be created and freed on several threads (data loader, OpenMP).
  size_t bytes_in_use() const { return in_use_.load(); }
  size_t peak_bytes() const { return peak_.load(); }
  void reset_peak() { peak_.store(in_use_.load()); }

  // While `out` is set, appends bytes_in_use() after every allocation to it (null stops). The
  // dry run's activation estimate (mokd/dry_run.cpp) compares the traces of two steps; the peak of
  // a step is always right after one of its allocations.
  void trace_allocations(std::vector<size_t>* out) {
    std::lock_guard<std::mutex> lock(trace_mutex_);
    trace_.store(out);
  }

 protected:
  void note_alloc(size_t n) {
    size_t now = in_use_.fetch_add(n) + n;
    size_t p = peak_.load();
    while (now > p && !peak_.compare_exchange_weak(p, now)) {
    }
    if (trace_.load(std::memory_order_relaxed)) {
      std::lock_guard<std::mutex> lock(trace_mutex_);
      if (std::vector<size_t>* t = trace_.load()) t->push_back(now);
    }
  }
  void note_free(size_t n) { in_use_.fetch_sub(n); }

 private:
  std::atomic<size_t> in_use_{0};
  std::atomic<size_t> peak_{0};
  std::atomic<std::vector<size_t>*> trace_{nullptr};
  std::mutex trace_mutex_;
};

// The allocator for a device (the CUDA one is registered by the CUDA backend).
Allocator& allocator_for(Device d);
Allocator& cpu_allocator();
void register_allocator(DeviceType t, Allocator* a);

class Storage {
 public:
  Storage(size_t nbytes, Allocator& alloc);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return alloc_->device(); }

  // A bf16 copy of these f32 values (a parameter's, engine/weight_copies.h), or null. Writing the
  // values through Tensor::copy_ / fill_ drops it; the optimizer's update rewrites it.
  std::shared_ptr<Storage> bf16_copy;

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Allocator* alloc_;
};

}  // namespace mokd
