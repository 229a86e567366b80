// The cost ledger as `mokd_train benchmark --ledger` prints it: per kernel, calls, bytes read and
// written and model FLOPs per step (engine/kernel_costs.h, from shapes), and the floor they imply
// on a card: bytes / copy bandwidth + FLOPs / GEMM rate. The step's totals close the table. With
// measured GPU time per kernel (MOKD_CUDA_PROFILE=1) it stands next to the floor.
#pragma once
#include <map>
#include <string>

#include "engine/kernel_costs.h"

namespace mokd {

struct CardRates {
  double copy_gbps = 0;    // device memory bandwidth a copy reaches, GB/s
  double gemm_tflops = 0;  // the GEMM rate of the step's precision, TFLOP/s
};

// The floor of `c` on `card`, in ms: its bytes at copy bandwidth plus its FLOPs at the GEMM rate.
double floor_ms(const KernelCost& c, const CardRates& card);

// The table for `costs` recorded over `steps` steps, per step, rows by floor (largest first);
// gpu_ms: measured GPU ms per kernel over those steps, or null.
std::string format_ledger(const std::map<std::string, KernelCost>& costs, double steps,
                          const CardRates& card, const std::map<std::string, double>* gpu_ms);

}  // namespace mokd
