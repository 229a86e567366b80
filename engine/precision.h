// Precision of a training step, process-wide (mixed-precision training).
//
//   F32   everything in f32 (matmul/linear: TF32 on the GPU only when the CUDA backend's TF32
//         mode is on).
//   BF16  activations are bf16 end to end. Products (matmul, linear, conv2d, attention's two
//         batched GEMMs) take bf16 operands, accumulate in f32 and write bf16; a linear's bias
//         (bf16, as PyTorch's autocast rounds it) joins the accumulator before the one rounding,
//         a convolution's f32 bias is added after it.
//         Weights come from their bf16 copies (engine/weight_copies.h), which the optimizer
//         rewrites in its update, so no step rounds a weight. The ops that follow (GELU, ReLU,
//         residual adds, layer and batch norm, softmax, pooling, dropout/drop-path, head merges)
//         read and write bf16 and compute in f32 inside each kernel: a value widens exactly on
//         load and rounds to nearest even once on store (engine/kernel_args.h). f32 stays where
//         it must: parameters (master weights) and their gradients, optimizer state,
//         normalisation statistics, losses (they widen their bf16 inputs), FAMO and the step's
//         values. Activation gradients are bf16, as the activations; a parameter meeting a bf16
//         activation (a position embedding, a mask) is read in f32 and gets an f32 gradient.
//         The CPU backend rounds at exactly the same points as the CUDA backend, so the CPU
//         tests define the numerics (tests/test_bf16_activations.cpp, tests/test_precision.cpp).
#pragma once

namespace mokd {

enum class MatmulPrecision { F32, BF16 };

void set_matmul_precision(MatmulPrecision p);
MatmulPrecision matmul_precision();
const char* precision_name(MatmulPrecision p);
MatmulPrecision parse_precision(const char* s);  // "f32" or "bf16"; throws naming the value

// Sets the precision for a scope and restores the previous one: math that belongs with the master
// weights (the projector's retraction onto its manifold) runs in f32 inside a bf16 step.
class ScopedPrecision {
 public:
  explicit ScopedPrecision(MatmulPrecision p) : prev_(matmul_precision()) {
    set_matmul_precision(p);
  }
  ~ScopedPrecision() { set_matmul_precision(prev_); }
  ScopedPrecision(const ScopedPrecision&) = delete;
  ScopedPrecision& operator=(const ScopedPrecision&) = delete;

 private:
  MatmulPrecision prev_;
};

}  // namespace mokd
