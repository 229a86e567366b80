#include "engine/model_flops.h"

#include <atomic>

namespace mokd {

namespace {
std::atomic<double> g_flops{0.0};
}  // namespace

void note_model_flops(double flops) { g_flops.fetch_add(flops, std::memory_order_relaxed); }

double model_flops() { return g_flops.load(std::memory_order_relaxed); }

}  // namespace mokd
