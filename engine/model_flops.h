// Model FLOPs: the multiply-adds of the products every backend runs (gemm, convolution,
// attention), counted from their shapes where each kernel checks its operands
// (engine/kernel_args.cpp), so the count is the same on the CPU and on a GPU. A multiply-add is
// 2 FLOPs. Elementwise work, normalisation and the optimizer are not model FLOPs; attention
// backward counts twice its forward (no recomputation), the usual convention for MFU.
// `mokd_train benchmark` divides the FLOPs of its timed steps by their time and by the card's
// bf16 peak (MFU).
//
//   const double before = model_flops();
//   ... steps ...
//   const double per_step = (model_flops() - before) / steps;
#pragma once

namespace mokd {

// Adds `flops` to the process's count (all threads).
void note_model_flops(double flops);

// FLOPs counted so far in this process.
double model_flops();

}  // namespace mokd
