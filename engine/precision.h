// Precision of matrix products, process-wide (mixed-precision training).
//
//   F32   matmul/linear take f32 operands (TF32 on the GPU only when the CUDA backend's TF32 mode
//         is on).
//   BF16  matmul/linear round their operands to bf16 and multiply them with f32 accumulation
//         into f32 outputs (tensor cores on the GPU); their backward products do the same with
//         the incoming gradient rounded to bf16. Parameters, their gradients and optimizer state
//         stay f32 (master weights); normalisation statistics, softmax, losses, reductions and
//         updates stay f32. The CPU backend emulates it exactly (bf16-rounded operands, f32
//         math), so the mode is testable without a GPU.
// Convolutions and attention are not covered yet: they run in f32 in both modes.
#pragma once

namespace mokd {

enum class MatmulPrecision { F32, BF16 };

void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();
const char* precision_name(MatmulPrecision p);
MatmulPrecision parse_precision(const char* s);  // "f32" or "bf16"; throws naming the value

}  // namespace mokd
