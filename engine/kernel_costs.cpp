#include "engine/kernel_costs.h"

#include <atomic>
#include <mutex>

#include "engine/error.h"

namespace mokd {

namespace {

std::atomic<double> g_flops{0.0};
std::atomic<bool> g_recording{false};
std::mutex g_mu;
std::map<std::string, KernelCost> g_costs;  // under g_mu
thread_local int t_nested = 0;

// Bytes of t's distinct elements: dims of stride 0 (broadcast) count once.
double distinct_bytes(const Tensor& t) {
  double n = 1;
  for (int64_t d = 0; d < t.dim(); ++d)
    if (t.strides()[d] != 0) n *= static_cast<double>(t.size(d));
  return t.numel() == 0 ? 0 : n * static_cast<double>(dtype_size(t.dtype()));
}

}  // namespace

KernelCost& KernelCost::operator+=(const KernelCost& o) {
  calls += o.calls;
  bytes_read += o.bytes_read;
  bytes_written += o.bytes_written;
  flops += o.flops;
  return *this;
}

void note_kernel(const char* kernel, std::initializer_list<const Tensor*> reads,
                 std::initializer_list<const Tensor*> writes, double flops) {
  if (t_nested > 0) return;
  if (flops > 0) g_flops.fetch_add(flops, std::memory_order_relaxed);
  if (!g_recording.load(std::memory_order_relaxed)) return;
  KernelCost c;
  c.calls = 1;
  c.flops = flops;
  for (const Tensor* t : reads)
    if (t && t->defined()) c.bytes_read += distinct_bytes(*t);
  for (const Tensor* t : writes)
    if (t && t->defined()) c.bytes_written += distinct_bytes(*t);
  std::lock_guard<std::mutex> lock(g_mu);
  g_costs[kernel] += c;
}

double model_flops() { return g_flops.load(std::memory_order_relaxed); }

NestedKernels::NestedKernels() { ++t_nested; }
NestedKernels::~NestedKernels() { --t_nested; }

KernelLedger::KernelLedger() {
  MOKD_CHECK(!g_recording.exchange(true), "KernelLedger: another ledger is recording");
  std::lock_guard<std::mutex> lock(g_mu);
  g_costs.clear();
}

KernelLedger::~KernelLedger() { g_recording = false; }

std::map<std::string, KernelCost> KernelLedger::by_kernel() const {
  std::lock_guard<std::mutex> lock(g_mu);
  return g_costs;
}

}  // namespace mokd
