// One counter of the moments the host waits for device values: every device-to-host read and
// every stream synchronisation of the CUDA backend, and every read of a tensor's values into host
// memory (Tensor::to_vector, item) on the CPU backend, where the same code would wait on a GPU.
// A training step is meant to make none between two log steps (docs/performance.md, "No host
// synchronisation"); tests count them around a stretch of steps on either backend.
//
//   const uint64_t before = host_syncs();
//   ... steps ...
//   EXPECT_EQ(host_syncs() - before, 0u) << last_host_sync();
#pragma once
#include <cstdint>
#include <string>

namespace mokd {

// Counts one host synchronisation; `what` names it (a string literal: the kernel or API).
void note_host_sync(const char* what);

// Host synchronisations so far in this process (all threads, all devices).
uint64_t host_syncs();

// The name given to the latest one ("" when none yet), for a failing test's message.
std::string last_host_sync();

}  // namespace mokd
