// What each backend kernel call costs, computed from its operands' shapes, so that a step's cost
// can be reasoned about on a machine without a GPU (docs/performance.md, "Cost ledger").
//
// Every kernel notes itself once per call, where both backends check its operands
// (engine/kernel_args.cpp; copies and fills in engine/tensor.cpp, random fills in the ops): its
// name (the CUDA backend's op name, as MOKD_CUDA_PROFILE reports it), the bytes it reads and
// writes (each operand's distinct elements: a broadcast operand counts once) and its FLOPs. So the
// ledger is the same on the CPU and on a GPU. FLOPs are model FLOPs: the multiply-adds of products
// (gemm, convolution, attention; 2 FLOPs each; a convolution's backward counts its data and weight
// gradients like its forward, attention's backward twice its forward, no recomputation: the usual
// convention for MFU). Elementwise, normalisation, loss and optimizer kernels count no FLOPs:
// their floor is their bytes.
//
//   KernelLedger ledger;            // records while alive (one at a time)
//   ... steps ...
//   for (auto& [kernel, cost] : ledger.by_kernel()) ...
#pragma once
#include <cstdint>
#include <initializer_list>
#include <map>
#include <string>

#include "engine/tensor.h"

namespace mokd {

struct KernelCost {
  int64_t calls = 0;
  double bytes_read = 0, bytes_written = 0, flops = 0;
  KernelCost& operator+=(const KernelCost& o);
};

// Notes one call of `kernel` (a string literal or a name that lives as long as the process).
// Null operands are skipped. Inside a NestedKernels scope it notes nothing.
void note_kernel(const char* kernel, std::initializer_list<const Tensor*> reads,
                 std::initializer_list<const Tensor*> writes, double flops = 0);

// Model FLOPs noted so far in this process, recorded or not (all threads).
double model_flops();

// While alive, every kernel this thread's kernels call through the backend interface (a bf16
// product widening its operands, an empty convolution zeroing its output) is not noted: the
// calling kernel noted the work already, and the other backend may not call them at all.
class NestedKernels {
 public:
  NestedKernels();
  ~NestedKernels();
  NestedKernels(const NestedKernels&) = delete;
  NestedKernels& operator=(const NestedKernels&) = delete;
};

// Records every noted call while alive, per kernel name. One ledger at a time in the process.
class KernelLedger {
 public:
  KernelLedger();
  ~KernelLedger();
  KernelLedger(const KernelLedger&) = delete;
  KernelLedger& operator=(const KernelLedger&) = delete;

  std::map<std::string, KernelCost> by_kernel() const;
};

}  // namespace mokd
