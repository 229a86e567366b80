// MOKD_CUDA_PROFILE: event pairs around the CUDA backend's ops, summed per op name at report().
#include "engine/cuda/op_profile.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "engine/host_sync.h"

namespace mokd::cuda_profile {

namespace {

struct Record {
  const char* op;
  cudaEvent_t start, stop;
};
struct Total {
  double ms = 0;
  long calls = 0;
};

std::mutex g_mu;
std::vector<Record> g_pending;                            // recorded, not yet read
std::vector<std::pair<cudaEvent_t, cudaEvent_t>> g_free;  // event pairs to reuse
std::map<std::string, Total> g_totals;
thread_local int t_depth = 0;

// Reads the finished records into the totals (the caller holds g_mu and has synchronised).
void drain() {
  for (const Record& r : g_pending) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, r.start, r.stop) == cudaSuccess) {
      Total& t = g_totals[r.op];
      t.ms += ms;
      t.calls += 1;
    }
    g_free.emplace_back(r.start, r.stop);
  }
  g_pending.clear();
}

}  // namespace

bool enabled() {
  static const bool on = [] {
    const char* e = std::getenv("MOKD_CUDA_PROFILE");
    if (e && std::strcmp(e, "1") != 0 && std::strcmp(e, "0") != 0 && *e)
      std::fprintf(stderr, "mokd: MOKD_CUDA_PROFILE=%s is neither 1 nor 0: profiling stays off\n",
                   e);
    return e && std::strcmp(e, "1") == 0;
  }();
  return on;
}

Scope::Scope(const char* op) {
  if (!enabled() || t_depth++ > 0) return;
  CudaBackend* be = cuda_backend();
  if (!be) return;
  std::lock_guard<std::mutex> lock(g_mu);
  if (g_pending.size() >= 8192) {  // bound the events held: read them back (a sync; profiling only)
    note_host_sync("op profile (events full)");
    cudaStreamSynchronize(be->stream());
    drain();
  }
  Record r{op, nullptr, nullptr};
  if (!g_free.empty()) {
    r.start = g_free.back().first;
    r.stop = g_free.back().second;
    g_free.pop_back();
  } else if (cudaEventCreate(&r.start) != cudaSuccess || cudaEventCreate(&r.stop) != cudaSuccess) {
    return;
  }
  cudaEventRecord(r.start, be->stream());
  g_pending.push_back(r);
  slot_ = static_cast<int>(g_pending.size()) - 1;
}

Scope::~Scope() {
  if (!enabled()) return;
  --t_depth;
  if (slot_ < 0) return;
  std::lock_guard<std::mutex> lock(g_mu);
  if (slot_ < static_cast<int>(g_pending.size()))
    cudaEventRecord(g_pending[slot_].stop, cuda_backend()->stream());
}

void reset() {
  if (!enabled() || !cuda_backend()) return;
  std::lock_guard<std::mutex> lock(g_mu);
  note_host_sync("op profile");
  cudaStreamSynchronize(cuda_backend()->stream());
  drain();
  g_totals.clear();
}

std::map<std::string, double> times_ms() {
  std::map<std::string, double> out;
  if (!enabled() || !cuda_backend()) return out;
  std::lock_guard<std::mutex> lock(g_mu);
  note_host_sync("op profile");
  cudaStreamSynchronize(cuda_backend()->stream());
  drain();
  for (const auto& [op, t] : g_totals) out[op] = t.ms;
  return out;
}

void report(std::FILE* f) {
  if (!enabled() || !cuda_backend()) return;
  std::lock_guard<std::mutex> lock(g_mu);
  note_host_sync("op profile");
  cudaStreamSynchronize(cuda_backend()->stream());
  drain();
  std::vector<std::pair<std::string, Total>> rows(g_totals.begin(), g_totals.end());
  std::sort(rows.begin(), rows.end(), [](auto& a, auto& b) { return a.second.ms > b.second.ms; });
  double all = 0;
  for (auto& r : rows) all += r.second.ms;
  std::fprintf(f, "GPU time per op (MOKD_CUDA_PROFILE=1; %.1f ms in all):\n", all);
  std::fprintf(f, "  %-28s %10s %8s %6s\n", "op", "ms", "calls", "share");
  for (auto& [name, t] : rows)
    std::fprintf(f, "  %-28s %10.2f %8ld %5.1f%%\n", name.c_str(), t.ms, t.calls,
                 all > 0 ? 100 * t.ms / all : 0.0);
  g_totals.clear();
}

}  // namespace mokd::cuda_profile
