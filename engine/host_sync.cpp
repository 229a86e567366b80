#include "engine/host_sync.h"

#include <atomic>

namespace mokd {

namespace {
std::atomic<uint64_t> g_syncs{0};
std::atomic<const char*> g_last{nullptr};
}  // namespace

void note_host_sync(const char* what) {
  g_syncs.fetch_add(1, std::memory_order_relaxed);
  g_last.store(what, std::memory_order_relaxed);
}

uint64_t host_syncs() { return g_syncs.load(std::memory_order_relaxed); }

std::string last_host_sync() {
  const char* w = g_last.load(std::memory_order_relaxed);
  return w ? w : "";
}

}  // namespace mokd
