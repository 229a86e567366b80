// Per-op GPU time for finding where a training step goes: with MOKD_CUDA_PROFILE=1 in the
// environment every CUDA backend op (the outermost cuda_guarded call) is bracketed by two CUDA
// events; report() waits for them and prints, per op name, the GPU time, the calls and the share.
// Off (the default) it costs one branch per op. Plain C++: tools include it without CUDA headers.
// Assumes one host thread issues CUDA ops (true today: loader workers only touch host memory).
#pragma once
#include <cstdio>
#include <map>
#include <string>

namespace mokd::cuda_profile {

bool enabled();  // MOKD_CUDA_PROFILE=1, read once

// Records the GPU time of one op while alive (nested scopes count toward the outermost only).
class Scope {
 public:
  explicit Scope(const char* op);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  int slot_ = -1;
};

void reset();               // drop what was recorded so far (e.g. the warm-up steps)
void report(std::FILE* f);  // synchronise, print the table (sorted by time), then reset
// Synchronise and return the GPU ms per op name recorded so far (empty when off); no reset.
std::map<std::string, double> times_ms();

}  // namespace mokd::cuda_profile
