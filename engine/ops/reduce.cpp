// Reductions: sum and mean over dims (with their broadcast-back gradients), argmax.
#include <algorithm>

#include "engine/ops/common.h"

namespace mokd {

namespace {

Tensor reduce_op(const char* name, const Tensor& x, std::vector<int64_t> dims, bool keepdim,
                 bool is_mean) {
  detail::check_float(name, x);
  int64_t rank = x.dim();
  std::vector<bool> reduced(rank, false);
  if (dims.empty()) std::fill(reduced.begin(), reduced.end(), true);  // all dims
  for (int64_t d : dims) {
    int64_t w = wrap_dim(d, rank, name);
    MOKD_CHECK(!reduced[w], name, ": dim ", d, " listed twice for ", x.str());
    reduced[w] = true;
  }
  Shape keep = x.shape(), final_shape;
  int64_t count = 1;
  for (int64_t k = 0; k < rank; ++k) {
    if (reduced[k]) {
      count *= keep[k];
      keep[k] = 1;
      if (keepdim) final_shape.push_back(1);
    } else {
      final_shape.push_back(keep[k]);
    }
  }
  float s = is_mean ? (count > 0 ? 1.f / static_cast<float>(count) : 0.f) : 1.f;
  Tensor xc = x.contiguous();
  Tensor out = Tensor::empty(keep, x.dtype(), x.device());
  if (x.numel() == 0)
    out.fill_(0.0);
  else
    backend_for(x).reduce_sum(xc, out, s);
  out = out.view(final_shape);
  if (!needs_grad({&x})) return out;
  Shape xs = x.shape();
  record(name, out, {x}, [=](const Tensor& g) -> std::vector<Tensor> {
    Tensor gb = g.contiguous().view(keep).expand_view(xs).contiguous();
    return {s == 1.f ? gb : scale(gb, s)};
  });
  return out;
}

}  // namespace

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  MOKD_CHECK(!dims.empty(), "sum: empty dim list (use sum(x) for all elements)");
  return reduce_op("sum", x, dims, keepdim, false);
}
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
  MOKD_CHECK(!dims.empty(), "mean: empty dim list (use mean(x) for all elements)");
  return reduce_op("mean", x, dims, keepdim, true);
}
Tensor sum(const Tensor& x) { return reduce_op("sum", x, {}, false, false); }
Tensor mean(const Tensor& x) { return reduce_op("mean", x, {}, false, true); }

Tensor argmax(const Tensor& x) {
  detail::check_float("argmax", x);
  MOKD_CHECK(x.dim() >= 1, "argmax: needs rank >= 1, got ", x.str());
  Shape s(x.shape().begin(), x.shape().end() - 1);
  Tensor out = Tensor::empty(s, DType::I64, x.device());
  // The kernel reads f32: a bf16 x (logits in the bf16 mode) is widened first (exact).
  backend_for(x).argmax_lastdim(detail::contiguous_as(x, DType::F32), out);
  return out;
}

}  // namespace mokd
