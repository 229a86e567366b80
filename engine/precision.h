// Precision of matrix products, process-wide (mixed-precision training).
//
//   F32   matmul/linear take f32 operands (TF32 on the GPU only when the CUDA backend's TF32 mode
//         is on).
//   BF16  matmul/linear, conv2d and attention round their operands to bf16 and multiply them
//         with f32 accumulation (tensor cores on the GPU): matmul/linear write f32 outputs;
//         conv2d writes a bf16 result (cuDNN's bf16 configuration) widened to f32, bias added in
//         f32; attention runs its products as batched bf16 GEMMs around an f32 softmax
//         (engine/ops/attention.cpp). Backward products take the incoming gradient rounded to
//         bf16 likewise. Parameters, their gradients and optimizer state stay f32 (master
//         weights); normalisation statistics, softmax, losses, reductions and updates stay f32.
//         The CPU backend emulates it (bf16-rounded operands, f32 math, rounded conv outputs),
//         so the mode is testable without a GPU (tests/test_precision.cpp).
#pragma once

namespace mokd {

enum class MatmulPrecision { F32, BF16 };

void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();
const char* precision_name(MatmulPrecision p);
MatmulPrecision parse_precision(const char* s);  // "f32" or "bf16"; throws naming the value

}  // namespace mokd
