#include "engine/storage.h"

#include <cstdlib>
#include <new>

#include "engine/error.h"

namespace mokd {

namespace {

class CpuAllocator final : public Allocator {
 public:
  void* allocate(size_t nbytes) override {
    if (nbytes == 0) return nullptr;
    // 64-byte alignment: a cache line, and enough for any vector load.
    size_t rounded = (nbytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    if (!p) MOKD_FAIL("cpu allocator: out of memory allocating ", nbytes, " bytes");
    note_alloc(nbytes);
    return p;
  }
  void deallocate(void* p, size_t nbytes) override {
    if (!p) return;
    std::free(p);
    note_free(nbytes);
  }
  Device device() const override { return Device::cpu(); }
};

Allocator* g_allocators[2] = {nullptr, nullptr};

}  // namespace

Allocator& cpu_allocator() {
  static CpuAllocator a;
  return a;
}

void register_allocator(DeviceType t, Allocator* a) { g_allocators[static_cast<int>(t)] = a; }

Allocator& allocator_for(Device d) {
  if (d.is_cpu()) return cpu_allocator();
  Allocator* a = g_allocators[static_cast<int>(d.type)];
  MOKD_CHECK(a, "device ", d.str(), " is not available: this build or machine has no CUDA backend");
  return *a;
}

Storage::Storage(size_t nbytes, Allocator& alloc) : nbytes_(nbytes), alloc_(&alloc) {
  data_ = alloc.allocate(nbytes);
}

Storage::~Storage() { alloc_->deallocate(data_, nbytes_); }

}  // namespace mokd
