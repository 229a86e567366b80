// Shape ops: reshape, permute/transpose (materialised), narrow, concat, flatten.
#include "engine/ops/common.h"

namespace mokd {

Tensor reshape(const Tensor& x, const Shape& shape) {
  MOKD_CHECK(x.defined(), "reshape: undefined input");
  Tensor out = x.contiguous().view(shape);  // a fresh view: never x's own handle
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  record("reshape", out, {x},
         [xs](const Tensor& g) -> std::vector<Tensor> { return {g.contiguous().view(xs)}; });
  return out;
}

Tensor flatten(const Tensor& x, int64_t start_dim) {
  int64_t s = wrap_dim(start_dim, x.dim(), "flatten");
  Shape shape(x.shape().begin(), x.shape().begin() + s);
  shape.push_back(-1);
  if (x.numel() == 0) shape.back() = 0;
  return reshape(x, shape);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  MOKD_CHECK(x.defined(), "permute: undefined input");
  Tensor out = x.permute_view(dims).contiguous();
  if (!needs_grad({&x})) return out;
  std::vector<int64_t> inv(dims.size());
  for (size_t i = 0; i < dims.size(); ++i)
    inv[wrap_dim(dims[i], x.dim(), "permute")] = static_cast<int64_t>(i);
  record("permute", out, {x}, [inv](const Tensor& g) -> std::vector<Tensor> {
    return {g.permute_view(inv).contiguous()};
  });
  return out;
}

Tensor transpose(const Tensor& x, int64_t d0, int64_t d1) {
  std::vector<int64_t> dims(x.dim());
  for (int64_t i = 0; i < x.dim(); ++i) dims[i] = i;
  std::swap(dims[wrap_dim(d0, x.dim(), "transpose")], dims[wrap_dim(d1, x.dim(), "transpose")]);
  return permute(x, dims);
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  MOKD_CHECK(x.defined(), "narrow: undefined input");
  int64_t d = wrap_dim(dim, x.dim(), "narrow");
  Tensor out = x.narrow_view(d, start, length).clone();
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  record("narrow", out, {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gx = Tensor::zeros(xs, g.dtype(), g.device());
    Tensor part = gx.narrow_view(d, start, length);
    part.copy_(g);
    return {gx};
  });
  return out;
}

Tensor cast(const Tensor& x, DType dtype) {
  detail::check_float("cast", x);
  MOKD_CHECK(is_floating(dtype), "cast: needs a floating target dtype, got ", dtype_name(dtype));
  if (x.dtype() == dtype) return x;
  Tensor out = detail::contiguous_as(x, dtype);
  if (!needs_grad({&x})) return out;
  const DType from = x.dtype();
  record("cast", out, {x}, [from](const Tensor& g) -> std::vector<Tensor> {
    return {detail::contiguous_as(g, from)};
  });
  return out;
}

Tensor concat(const std::vector<Tensor>& xs, int64_t dim) {
  MOKD_CHECK(!xs.empty(), "concat: no tensors given");
  const Tensor& first = xs[0];
  DType dt = first.defined() ? first.dtype() : DType::F32;
  for (const Tensor& t : xs)
    if (t.defined() && t.dtype() == DType::BF16 && is_floating(dt)) dt = DType::BF16;
  int64_t d = wrap_dim(dim, first.dim(), "concat");
  Shape out_shape = first.shape();
  out_shape[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    MOKD_CHECK(t.defined(), "concat: tensor ", i, " is undefined");
    const bool mixed_float = is_floating(t.dtype()) && is_floating(first.dtype()) &&
                             t.dtype() != DType::F64 && first.dtype() != DType::F64;
    MOKD_CHECK(t.device() == first.device() && (t.dtype() == first.dtype() || mixed_float),
               "concat: tensor ", i, " is ", t.str(), " but tensor 0 is ", first.str());
    bool ok = t.dim() == first.dim();
    for (int64_t k = 0; ok && k < t.dim(); ++k) ok = (k == d) || t.shape()[k] == first.shape()[k];
    MOKD_CHECK(ok, "concat: shapes ", shape_str(first.shape()), " and ", shape_str(t.shape()),
               " (tensor ", i, ") differ outside dim ", d);
    out_shape[d] += t.shape()[d];
  }
  Tensor out = Tensor::empty(out_shape, dt, first.device());
  std::vector<int64_t> sizes;
  int64_t off = 0;
  for (const Tensor& t : xs) {
    Tensor part = out.narrow_view(d, off, t.shape()[d]);
    part.copy_(t);
    sizes.push_back(t.shape()[d]);
    off += t.shape()[d];
  }
  if (!needs_grad(xs)) return out;
  record("concat", out, xs, [d, sizes](const Tensor& g) -> std::vector<Tensor> {
    std::vector<Tensor> grads;
    int64_t o = 0;
    for (int64_t n : sizes) {
      grads.push_back(g.narrow_view(d, o, n).contiguous().clone());
      o += n;
    }
    return grads;
  });
  return out;
}

}  // namespace mokd
