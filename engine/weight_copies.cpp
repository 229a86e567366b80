#include "engine/weight_copies.h"

#include "engine/error.h"

namespace mokd {

namespace {

Tensor view_of(const std::shared_ptr<Storage>& s, const Shape& shape) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = s;
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = DType::BF16;
  return Tensor(impl);
}

}  // namespace

bool can_keep_bf16_copy(const Tensor& t) {
  return t.defined() && t.storage() && t.dtype() == DType::F32 && t.is_contiguous() &&
         t.offset_bytes() == 0 && t.nbytes() == t.storage()->nbytes();
}

Tensor bf16_copy_of(const Tensor& t) {
  if (!can_keep_bf16_copy(t) || !t.storage()->bf16_copy) return Tensor();
  return view_of(t.storage()->bf16_copy, t.shape());
}

Tensor make_bf16_copy(const Tensor& t) {
  MOKD_CHECK(can_keep_bf16_copy(t), "make_bf16_copy: needs a contiguous f32 tensor over its whole ",
             "storage (a parameter), got ", t.defined() ? t.str() : std::string("undefined"));
  auto s = std::make_shared<Storage>(static_cast<size_t>(t.numel()) * dtype_size(DType::BF16),
                                     allocator_for(t.device()));
  Tensor copy = view_of(s, t.shape());
  copy.copy_(t);
  t.storage()->bf16_copy = s;
  return copy;
}

void drop_bf16_copy(const Tensor& t) {
  if (t.defined() && t.storage()) t.storage()->bf16_copy.reset();
}

}  // namespace mokd
