// Helpers shared by the op implementations (not part of the public API).
#pragma once
#include <vector>

#include "engine/error.h"
#include "engine/ops.h"
#include "engine/precision.h"
#include "engine/weight_copies.h"

namespace mokd::detail {

// Both operands on one device with one floating dtype; throws naming op and both tensors.
inline void check_pair(const char* op, const Tensor& a, const Tensor& b) {
  MOKD_CHECK(a.defined() && b.defined(), op, ": undefined operand");
  MOKD_CHECK(a.device() == b.device(), op, ": operands on different devices: ", a.str(), " and ",
             b.str());
  MOKD_CHECK(a.dtype() == b.dtype(), op, ": operands of different dtypes: ", a.str(), " and ",
             b.str());
  MOKD_CHECK(is_floating(a.dtype()), op, ": needs floating-point operands, got ", a.str());
}

inline void check_float(const char* op, const Tensor& x, const char* arg = "input") {
  MOKD_CHECK(x.defined(), op, ": ", arg, " is undefined");
  MOKD_CHECK(is_floating(x.dtype()), op, ": ", arg, " must be floating point, got ", x.str());
}

inline void check_rank(const char* op, const Tensor& x, int64_t rank, const char* arg = "input") {
  MOKD_CHECK(x.dim() == rank, op, ": ", arg, " must have rank ", rank, ", got ", x.str());
}

// The dtype a product computes in: bf16 in the bf16 mode (where products write bf16 activations
// and the ops that follow keep them, engine/precision.h) or for a bf16 operand, else x's.
inline DType product_dtype(const Tensor& x) {
  return matmul_precision() == MatmulPrecision::BF16 || x.dtype() == DType::BF16 ? DType::BF16
                                                                                 : x.dtype();
}
// A parameter or statistic that goes with activation x: of x's dtype, or f32 with a bf16 x
// (parameters stay f32 master weights).
inline bool fits_activation(const Tensor& x, const Tensor& t) {
  return t.dtype() == x.dtype() || (x.dtype() == DType::BF16 && t.dtype() == DType::F32);
}
// Two operands of which one is a bf16 activation and the other an f32 parameter, either order.
inline bool bf16_with_f32(const Tensor& a, const Tensor& b) {
  return a.defined() && b.defined() && a.dtype() != b.dtype() &&
         (fits_activation(a, b) || fits_activation(b, a));
}

// An output tensor like x (shape, dtype, device), uninitialised.
// t as a contiguous tensor of dtype dt in one pass: t itself when it already is one, else a
// single strided converting copy (not contiguous() then to(): that would be two).
inline Tensor contiguous_as(const Tensor& t, DType dt) {
  if (t.is_contiguous() && t.dtype() == dt) return t;
  Tensor out = Tensor::empty(t.shape(), dt, t.device());
  out.copy_(t);
  return out;
}
// A product's operand in dtype dt: a parameter's current bf16 copy (engine/weight_copies.h) when
// it has one, else contiguous_as (one pass, none for an operand already stored so).
inline Tensor product_operand(const Tensor& t, DType dt) {
  if (dt == DType::BF16 && t.dtype() == DType::F32) {
    Tensor copy = bf16_copy_of(t);
    if (copy.defined()) return copy;
  }
  return contiguous_as(t, dt);
}
inline Tensor empty_like(const Tensor& x) {
  return Tensor::empty(x.shape(), x.dtype(), x.device());
}
inline Tensor empty_as(const Tensor& x, const Shape& shape) {
  return Tensor::empty(shape, x.dtype(), x.device());
}

}  // namespace mokd::detail
