// bf16 copies of f32 parameters for the bf16 mode's products (engine/precision.h): a linear,
// matmul or convolution reads a weight's bf16 copy instead of rounding the f32 master weight at
// every step. The optimizer rewrites the copies of the parameters it trains in the same pass as
// its update (AdamTensorRef::p_bf16); a frozen model (the teacher) makes its copies once.
//
// A copy lives on the parameter's Storage (Storage::bf16_copy). It is only ever used while it is
// current: writing the values through Tensor::copy_ / fill_ (loading a checkpoint, EMA swaps,
// initialisation) drops it, and an optimizer step outside the bf16 mode drops it too.
#pragma once
#include "engine/tensor.h"

namespace mokd {

// t can keep a copy: contiguous f32 covering its whole storage (a parameter as models hold it).
bool can_keep_bf16_copy(const Tensor& t);

// t's bf16 copy as a tensor of t's shape, when t is a whole f32 storage with a current copy;
// undefined otherwise.
Tensor bf16_copy_of(const Tensor& t);

// Makes t's bf16 copy from its current values (one rounding pass) and returns it; t must be
// contiguous f32 covering its whole storage.
Tensor make_bf16_copy(const Tensor& t);

// Drops t's copy (its next product rounds the f32 values again, or a later update makes one).
void drop_bf16_copy(const Tensor& t);

}  // namespace mokd
