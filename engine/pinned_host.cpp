// Pinned host blocks: best-fit reuse of idle free blocks, fences that keep a block out of reuse
// while a device reads it, and the heap when nothing more can be pinned (engine/pinned_host.h).
#include "engine/pinned_host.h"

#include <atomic>
#include <cstdlib>

#include "engine/error.h"

namespace mokd {

PinnedHostAllocator::PinnedHostAllocator(PinnedMemorySource& source, size_t max_cached_bytes)
    : source_(source), max_cached_(max_cached_bytes) {}

PinnedHostAllocator::~PinnedHostAllocator() {
  // Blocks still in use belong to tensors that outlive the allocator (a process exiting): they
  // are left to the operating system rather than freed under their owners.
  for (auto& [p, b] : blocks_) {
    if (b.in_use) continue;
    for (auto& f : b.fences) f->wait();
    source_.deallocate(const_cast<char*>(p));
  }
}

bool PinnedHostAllocator::idle(Block& b) {
  std::erase_if(b.fences, [](const std::shared_ptr<HostFence>& f) { return f->done(); });
  return b.fences.empty();
}

void* PinnedHostAllocator::allocate(size_t nbytes) {
  if (nbytes == 0) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  // The smallest free block that fits: an idle one is reused at once; a busy one (a device read
  // still queued) only when the source can pin no more.
  auto best_idle = blocks_.end(), best_busy = blocks_.end();
  for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
    Block& b = it->second;
    if (b.in_use || b.bytes < nbytes) continue;
    if (idle(b)) {
      if (best_idle == blocks_.end() || b.bytes < best_idle->second.bytes) best_idle = it;
    } else if (best_busy == blocks_.end() || b.bytes < best_busy->second.bytes) {
      best_busy = it;
    }
  }
  auto take = [&](std::map<const char*, Block>::iterator it) {
    it->second.in_use = true;
    cached_bytes_ -= it->second.bytes;
    ++stats_.reuses;
    note_alloc(nbytes);
    return const_cast<char*>(it->first);
  };
  if (best_idle != blocks_.end()) return take(best_idle);
  if (void* p = source_.allocate(nbytes)) {
    Block& b = blocks_[static_cast<const char*>(p)];
    b.bytes = nbytes;
    b.in_use = true;
    ++stats_.source_allocations;
    note_alloc(nbytes);
    return p;
  }
  if (best_busy != blocks_.end()) {
    // Waiting holds the lock: the reads are DMAs of a few milliseconds at most.
    for (auto& f : best_busy->second.fences) f->wait();
    best_busy->second.fences.clear();
    ++stats_.fence_waits;
    return take(best_busy);
  }
  // Nothing (more) can be pinned: heap memory, which uploads stage (is_pinned is false for it).
  void* p = std::aligned_alloc(64, (nbytes + 63) / 64 * 64);
  if (!p) MOKD_FAIL("pinned host allocator: out of memory allocating ", nbytes, " bytes");
  ++stats_.heap_fallbacks;
  note_alloc(nbytes);
  return p;
}

void PinnedHostAllocator::deallocate(void* p, size_t nbytes) {
  if (!p) return;
  std::lock_guard<std::mutex> lock(mu_);
  note_free(nbytes);
  auto it = blocks_.find(static_cast<const char*>(p));
  if (it == blocks_.end()) {  // a heap fallback
    std::free(p);
    return;
  }
  it->second.in_use = false;
  cached_bytes_ += it->second.bytes;
  trim_locked();
}

void PinnedHostAllocator::trim_locked() {
  for (auto it = blocks_.begin(); it != blocks_.end() && cached_bytes_ > max_cached_;) {
    Block& b = it->second;
    if (b.in_use || !idle(b)) {
      ++it;
      continue;
    }
    cached_bytes_ -= b.bytes;
    source_.deallocate(const_cast<char*>(it->first));
    it = blocks_.erase(it);
  }
}

bool PinnedHostAllocator::is_pinned(const void* p, size_t nbytes) const {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.upper_bound(c);
  if (it == blocks_.begin()) return false;
  --it;
  return it->second.in_use && c >= it->first && c + nbytes <= it->first + it->second.bytes;
}

void PinnedHostAllocator::add_fence(const void* p, std::shared_ptr<HostFence> fence) {
  const char* c = static_cast<const char*>(p);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = blocks_.upper_bound(c);
  MOKD_CHECK(it != blocks_.begin(), "pinned host allocator: add_fence on memory it does not hold");
  --it;
  MOKD_CHECK(c < it->first + it->second.bytes,
             "pinned host allocator: add_fence on memory it does not hold");
  idle(it->second);  // drops finished fences: a block uploaded many times keeps few
  it->second.fences.push_back(std::move(fence));
}

PinnedHostAllocator::Stats PinnedHostAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  Stats s = stats_;
  s.pinned_blocks = static_cast<int64_t>(blocks_.size());
  s.pinned_bytes = 0;
  for (const auto& [p, b] : blocks_) s.pinned_bytes += b.bytes;
  return s;
}

namespace {
std::atomic<PinnedHostAllocator*> g_pinned{nullptr};
}

PinnedHostAllocator* pinned_host_allocator() { return g_pinned.load(); }
void register_pinned_host_allocator(PinnedHostAllocator* a) { g_pinned.store(a); }

Allocator& host_staging_allocator(Device device, bool pin) {
  PinnedHostAllocator* p = pinned_host_allocator();
  if (pin && !device.is_cpu() && p) return *p;
  return cpu_allocator();
}

}  // namespace mokd
