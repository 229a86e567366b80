// The plain-data types that kernels take as arguments: element types, elementwise ops, random
// keys, convolution/pooling geometry and optimizer hyper-parameters. No tensor here: device code
// (kernels/) includes this header and must not see engine/tensor.h.
#pragma once
#include <cstdint>

namespace mokd {

// f64 exists for CPU-side checks only; kernels compute in f32 (bf16 storage on the GPU). u8 holds
// image bytes (the loader's batches, engine/image_batch.h); it is copied, not computed with.
enum class DType : uint8_t { F32, BF16, I32, I64, F64, U8 };

enum class UnaryOp : uint8_t {
  Neg,
  Exp,
  Log,
  Sqrt,
  Square,
  Abs,
  Relu,
  Gelu,       // gelu: erf form
  Scale,      // alpha * x
  AddScalar,  // x + alpha
  SmoothL1,   // 0.5 x^2 / beta if |x| < beta else |x| - 0.5 beta   (alpha = beta)
  ClipCoef,   // min(1, alpha / (x + 1e-6)): the gradient-clipping factor from a global norm x
  Reciprocal,
};
const char* unary_name(UnaryOp op);

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };

// Counter-based random numbers (Philox4x32-10): the same (seed, offset) gives the same values on
// every backend, so dropout masks match between CPU and CUDA.
struct RngKey {
  uint64_t seed = 0;
  uint64_t offset = 0;  // counter start; each element i uses counter offset + i
};

struct Conv2dParams {
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  int groups = 1;
};

struct Pool2dParams {
  int kernel_h = 1, kernel_w = 1;
  int stride_h = 1, stride_w = 1;
  int pad_h = 0, pad_w = 0;
  bool count_include_pad = true;  // avg pool: PyTorch's default
};

struct AdamHyper {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.f;
  int64_t step = 1;       // 1-based, after increment (bias correction)
  bool decoupled = true;  // true: AdamW (p -= lr*wd*p); false: Adam with L2 (g += wd*p)
};

struct SgdHyper {
  float lr = 0.1f, momentum = 0.f, dampening = 0.f, weight_decay = 0.f;
  bool nesterov = false;
  bool first_step = true;  // momentum buffer starts as the gradient itself (PyTorch)
};

}  // namespace mokd
