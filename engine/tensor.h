// Tensor: a view (shape, strides, byte offset, dtype) of shared Storage on one device, plus the
// autograd fields (requires_grad, .grad, the node that made it).
//
// Copying a Tensor copies a handle: both name the same TensorImpl. Views (reshape of contiguous
// data, narrow, permute) share Storage and cost nothing; most kernels want contiguous inputs and
// ops make them with contiguous() (one copy kernel).
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "engine/dtype.h"
#include "engine/storage.h"

namespace mokd {

using Shape = std::vector<int64_t>;
std::string shape_str(const Shape& s);  // "[2, 3, 4]"
int64_t shape_numel(const Shape& s);
Shape contiguous_strides(const Shape& s);  // in elements

struct Node;  // engine/autograd.h

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  size_t offset = 0;  // bytes from storage start
  Shape shape;
  Shape strides;  // in elements
  DType dtype = DType::F32;

  // autograd
  bool requires_grad = false;
  std::shared_ptr<TensorImpl> grad;  // leaf tensors only
  std::shared_ptr<Node> grad_fn;     // null for leaves and for tensors made without grad
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  // ---- factories (uninitialised, filled, from host data) ----
  static Tensor empty(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  // The same with bytes from a given allocator of the tensor's device (the loader's pinned host
  // blocks, engine/pinned_host.h).
  static Tensor empty_in(Allocator& alloc, const Shape& shape, DType dtype);
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor full(const Shape& shape, double value, DType dtype = DType::F32,
                     Device dev = Device::cpu());
  static Tensor ones(const Shape& shape, DType dtype = DType::F32, Device dev = Device::cpu()) {
    return full(shape, 1.0, dtype, dev);
  }
  // Host values converted to dtype and copied to dev.
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape,
                            DType dtype = DType::F32, Device dev = Device::cpu());
  static Tensor from_vector_i64(const std::vector<int64_t>& v, const Shape& shape,
                                Device dev = Device::cpu());
  static Tensor scalar(float v, Device dev = Device::cpu()) {
    return from_vector({v}, {}, DType::F32, dev);
  }

  // ---- metadata ----
  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl_->shape; }
  const Shape& strides() const { return impl_->strides; }
  int64_t dim() const { return static_cast<int64_t>(impl_->shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl_->shape); }
  DType dtype() const { return impl_->dtype; }
  Device device() const { return impl_->storage ? impl_->storage->device() : Device::cpu(); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  size_t offset_bytes() const { return impl_->offset; }
  bool is_contiguous() const;
  std::string str() const;  // "f32[2, 3] on cpu"
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  const std::shared_ptr<Storage>& storage() const { return impl_->storage; }

  // Typed pointer to the first element (CPU tensors only; checks the dtype).
  template <class T>
  T* data() const;
  void* raw_data() const;  // first element, any device

  // ---- views and copies (not recorded by autograd; see engine/ops.h for differentiable ones) ----
  Tensor view(const Shape& shape) const;  // contiguous only; one -1 allowed
  Tensor narrow_view(int64_t dim, int64_t start, int64_t len) const;
  Tensor permute_view(const std::vector<int64_t>& dims) const;
  Tensor expand_view(const Shape& shape) const;  // broadcast: size-1 dims get stride 0
  Tensor contiguous() const;                     // itself if already contiguous
  Tensor clone() const;                          // always a fresh contiguous copy
  Tensor to(Device dev) const;
  Tensor to(DType dtype) const;
  void copy_(const Tensor& src);  // same shape; any strides, dtypes, devices
  void fill_(double value);

  // Host copies of the values (converted to float / int64).
  std::vector<float> to_vector() const;
  std::vector<int64_t> to_vector_i64() const;
  float item() const;  // one-element tensors

  // ---- autograd ----
  bool requires_grad() const { return impl_->requires_grad; }
  Tensor& set_requires_grad(bool r);  // leaves only
  bool is_leaf() const { return impl_->grad_fn == nullptr; }
  Tensor grad() const { return impl_->grad ? Tensor(impl_->grad) : Tensor(); }
  void set_grad(const Tensor& g) { impl_->grad = g.impl_; }
  void zero_grad() { impl_->grad.reset(); }
  // Reverse-mode backward from a one-element tensor. Frees the graph's saved tensors unless
  // retain_graph; a second backward through a freed graph is an error.
  void backward(bool retain_graph = false) const;
  // Same storage, no autograd history.
  Tensor detach() const;

 private:
  std::shared_ptr<TensorImpl> impl_;
};

// Normalises a possibly negative dim for a tensor of rank `rank`; throws naming `op` if out of
// range.
int64_t wrap_dim(int64_t d, int64_t rank, const char* op);

}  // namespace mokd
