#include "engine/tensor.h"

#include <cstring>
#include <sstream>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/bf16.h"
#include "engine/error.h"
#include "engine/host_sync.h"
#include "engine/kernel_costs.h"

namespace mokd {

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int64_t i = static_cast<int64_t>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

int64_t wrap_dim(int64_t d, int64_t rank, const char* op) {
  int64_t r = d < 0 ? d + rank : d;
  MOKD_CHECK(r >= 0 && r < rank, op, ": dim ", d, " is out of range for a tensor of rank ", rank);
  return r;
}

// ---- factories ----

Tensor Tensor::empty(const Shape& shape, DType dtype, Device dev) {
  return empty_in(allocator_for(dev), shape, dtype);
}

Tensor Tensor::empty_in(Allocator& alloc, const Shape& shape, DType dtype) {
  for (int64_t d : shape)
    MOKD_CHECK(d >= 0, "Tensor::empty: negative size in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  impl->storage = std::make_shared<Storage>(shape_numel(shape) * dtype_size(dtype), alloc);
  return Tensor(std::move(impl));
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, Device dev) {
  return full(shape, 0.0, dtype, dev);
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, Device dev) {
  Tensor t = empty(shape, dtype, dev);
  t.fill_(value);
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape, DType dtype,
                           Device dev) {
  MOKD_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape),
             "Tensor::from_vector: ", v.size(), " values do not fill shape ", shape_str(shape));
  Tensor host = empty(shape, DType::F32, Device::cpu());
  if (!v.empty()) std::memcpy(host.raw_data(), v.data(), v.size() * sizeof(float));
  if (dtype == DType::F32 && dev.is_cpu()) return host;
  Tensor out = empty(shape, dtype, dev);
  out.copy_(host);
  return out;
}

Tensor Tensor::from_vector_i64(const std::vector<int64_t>& v, const Shape& shape, Device dev) {
  MOKD_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape),
             "Tensor::from_vector_i64: ", v.size(), " values do not fill shape ", shape_str(shape));
  Tensor host = empty(shape, DType::I64, Device::cpu());
  if (!v.empty()) std::memcpy(host.raw_data(), v.data(), v.size() * sizeof(int64_t));
  return dev.is_cpu() ? host : host.to(dev);
}

// ---- metadata ----

int64_t Tensor::size(int64_t d) const { return impl_->shape[wrap_dim(d, dim(), "Tensor::size")]; }

bool Tensor::is_contiguous() const {
  int64_t expect = 1;
  for (int64_t i = dim() - 1; i >= 0; --i) {
    if (impl_->shape[i] == 1) continue;
    if (impl_->strides[i] != expect) return false;
    expect *= impl_->shape[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined tensor";
  return std::string(dtype_name(dtype())) + shape_str(shape()) + " on " + device().str();
}

void* Tensor::raw_data() const {
  if (!impl_->storage || !impl_->storage->data()) return nullptr;
  return static_cast<char*>(impl_->storage->data()) + impl_->offset;
}

template <class T>
static DType dtype_of();
template <>
DType dtype_of<float>() {
  return DType::F32;
}
template <>
DType dtype_of<double>() {
  return DType::F64;
}
template <>
DType dtype_of<int32_t>() {
  return DType::I32;
}
template <>
DType dtype_of<int64_t>() {
  return DType::I64;
}
template <>
DType dtype_of<bf16>() {
  return DType::BF16;
}
template <>
DType dtype_of<uint16_t>() {
  return DType::BF16;
}

template <class T>
T* Tensor::data() const {
  MOKD_CHECK(defined(), "Tensor::data: undefined tensor");
  MOKD_CHECK(dtype() == dtype_of<T>(), "Tensor::data: tensor is ", str(), ", asked for ",
             dtype_name(dtype_of<T>()));
  MOKD_CHECK(device().is_cpu(), "Tensor::data: tensor is on ", device().str(),
             "; host pointers exist only for cpu tensors");
  return static_cast<T*>(raw_data());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;
template bf16* Tensor::data<bf16>() const;
template uint16_t* Tensor::data<uint16_t>() const;

// ---- views ----

static Tensor make_view(const Tensor& base, Shape shape, Shape strides, size_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->offset = offset;
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

Tensor Tensor::view(const Shape& shape) const {
  MOKD_CHECK(is_contiguous(), "view: tensor ", str(), " is not contiguous; use reshape");
  Shape s = shape;
  int64_t known = 1, infer = -1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      MOKD_CHECK(infer < 0, "view: more than one -1 in ", shape_str(shape));
      infer = static_cast<int64_t>(i);
    } else {
      MOKD_CHECK(s[i] >= 0, "view: negative size in ", shape_str(shape));
      known *= s[i];
    }
  }
  if (infer >= 0) {
    MOKD_CHECK(known > 0 && numel() % known == 0, "view: cannot view ", str(), " as ",
               shape_str(shape));
    s[infer] = numel() / known;
  }
  MOKD_CHECK(shape_numel(s) == numel(), "view: cannot view ", str(), " as ", shape_str(shape), " (",
             numel(), " elements vs ", shape_numel(s), ")");
  return make_view(*this, s, contiguous_strides(s), impl_->offset);
}

Tensor Tensor::narrow_view(int64_t d, int64_t start, int64_t len) const {
  d = wrap_dim(d, dim(), "narrow");
  MOKD_CHECK(start >= 0 && len >= 0 && start + len <= shape()[d], "narrow: range [", start, ", ",
             start + len, ") is outside dim ", d, " of ", str());
  Shape s = shape();
  s[d] = len;
  return make_view(*this, s, strides(), impl_->offset + start * strides()[d] * dtype_size(dtype()));
}

Tensor Tensor::permute_view(const std::vector<int64_t>& dims) const {
  MOKD_CHECK(static_cast<int64_t>(dims.size()) == dim(), "permute: ", dims.size(),
             " dims given for ", str());
  Shape s(dims.size()), st(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = wrap_dim(dims[i], dim(), "permute");
    MOKD_CHECK(!seen[d], "permute: dim ", d, " repeated for ", str());
    seen[d] = true;
    s[i] = shape()[d];
    st[i] = strides()[d];
  }
  return make_view(*this, s, st, impl_->offset);
}

Tensor Tensor::expand_view(const Shape& target) const {
  MOKD_CHECK(static_cast<int64_t>(target.size()) >= dim(), "expand: cannot expand ", str(), " to ",
             shape_str(target));
  size_t lead = target.size() - shape().size();
  Shape st(target.size(), 0);
  for (size_t i = 0; i < shape().size(); ++i) {
    int64_t have = shape()[i], want = target[lead + i];
    MOKD_CHECK(have == want || have == 1, "expand: cannot expand ", str(), " to ",
               shape_str(target));
    st[lead + i] = (have == want) ? strides()[i] : 0;
  }
  return make_view(*this, target, st, impl_->offset);
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return clone();
}

Tensor Tensor::clone() const {
  Tensor out = empty(shape(), dtype(), device());
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  Tensor out = empty(shape(), dtype(), dev);
  out.copy_(*this);
  return out;
}

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  Tensor out = empty(shape(), dt, device());
  out.copy_(*this);
  return out;
}

void Tensor::copy_(const Tensor& src) {
  MOKD_CHECK(src.shape() == shape(), "copy_: source ", src.str(), " and destination ", str(),
             " differ in shape");
  if (numel() == 0) return;
  impl_->storage->bf16_copy.reset();  // new values: a bf16 copy of the old ones is stale
  if (src.device() == device()) {
    if (src.raw_data() != raw_data() || src.dtype() != dtype() || src.strides() != strides())
      note_kernel("copy", {&src}, {this});
    backend_for(device()).copy(src, *this);
    return;
  }
  // Across devices: stage through a contiguous host buffer in the source dtype.
  if (device().is_cpu()) {  // device -> host
    Tensor s = src.contiguous();
    Tensor host = empty(shape(), s.dtype(), Device::cpu());
    backend_for(s.device()).copy_to_host(host.raw_data(), s.raw_data(), s.nbytes());
    backend_for(Device::cpu()).copy(host, *this);
  } else {  // host -> device
    Tensor s = src.device().is_cpu() ? src.contiguous() : src.to(Device::cpu());
    Tensor dev = empty(shape(), s.dtype(), device());
    backend_for(device()).copy_from_host(dev.raw_data(), s.raw_data(), s.nbytes());
    backend_for(device()).copy(dev, *this);
  }
}

void Tensor::fill_(double value) {
  if (numel() == 0) return;
  impl_->storage->bf16_copy.reset();  // new values: a bf16 copy of the old ones is stale
  note_kernel("fill", {}, {this});
  backend_for(device()).fill(*this, value);
}

// On the CPU the values are already host memory; the read is counted as a GPU's would be, so
// that a test of "no host synchronisation" means the same on both backends.
std::vector<float> Tensor::to_vector() const {
  if (device().is_cpu()) note_host_sync("to_vector");
  Tensor host = Tensor::empty(shape(), DType::F32, Device::cpu());
  host.copy_(*this);
  const float* p = host.data<float>();
  return std::vector<float>(p, p + numel());
}

std::vector<int64_t> Tensor::to_vector_i64() const {
  if (device().is_cpu()) note_host_sync("to_vector_i64");
  Tensor host = Tensor::empty(shape(), DType::I64, Device::cpu());
  host.copy_(*this);
  const int64_t* p = host.data<int64_t>();
  return std::vector<int64_t>(p, p + numel());
}

float Tensor::item() const {
  MOKD_CHECK(numel() == 1, "item: tensor ", str(), " has ", numel(), " elements, expected 1");
  return to_vector()[0];
}

Tensor& Tensor::set_requires_grad(bool r) {
  MOKD_CHECK(is_leaf(), "set_requires_grad: only leaf tensors can be marked (", str(), ")");
  MOKD_CHECK(!r || is_floating(dtype()), "set_requires_grad: ", str(), " is not floating point");
  impl_->requires_grad = r;
  return *this;
}

Tensor Tensor::detach() const { return make_view(*this, shape(), strides(), impl_->offset); }

}  // namespace mokd
