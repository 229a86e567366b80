#include "mokd/grad_sync.h"

#include <algorithm>

#include "engine/error.h"
#include "engine/ops.h"

namespace mokd {

GradSync::GradSync(std::vector<Tensor> params, dist::Communicator& comm, int64_t micro_per_rank,
                   double bucket_mb)
    : params_(params.rbegin(), params.rend()),
      comm_(comm),
      micro_per_rank_(micro_per_rank),
      micro_total_(micro_per_rank * comm.world()) {
  MOKD_CHECK(micro_per_rank >= 1, "GradSync: micro_per_rank must be >= 1, got ", micro_per_rank);
  MOKD_CHECK(bucket_mb > 0, "dist.bucket_mb must be > 0, got ", bucket_mb);
  // Buckets cut at parameter boundaries: the first at 1 MiB (so the first reduction can start
  // early), then bucket_mb.
  const int64_t first = (1 << 20) / 4, rest = std::max<int64_t>(1, int64_t(bucket_mb * (1 << 20) / 4));
  int64_t off = 0, begin = 0;
  for (const Tensor& p : params_) {
    off += p.numel();
    if (off - begin >= (buckets_.empty() ? first : rest)) {
      buckets_.push_back({begin, off - begin});
      begin = off;
    }
  }
  if (off > begin) buckets_.push_back({begin, off - begin});
}

void GradSync::add() {
  if (micro_total_ == 1) return;
  MOKD_CHECK(added_ < micro_per_rank_, "GradSync: ", added_ + 1, " micro-batches added to a step of ",
             micro_per_rank_);
  NoGrad ng;
  std::vector<Tensor> parts;
  parts.reserve(params_.size());
  for (Tensor& p : params_) {
    Tensor g = p.grad();
    parts.push_back(g.defined() ? g.contiguous().view({-1})
                                : Tensor::zeros({p.numel()}, DType::F32, p.device()));
    p.zero_grad();
  }
  Tensor flat = concat(parts, 0);
  acc_ = added_ == 0 ? flat : mokd::add(acc_, flat);
  ++added_;
}

void GradSync::finish() {
  if (micro_total_ == 1) return;
  MOKD_CHECK(added_ == micro_per_rank_, "GradSync: the step ran ", added_, " of its ",
             micro_per_rank_, " micro-batches");
  NoGrad ng;
  for (const auto& [off, len] : buckets_) {
    Tensor b = acc_.narrow_view(0, off, len);
    comm_.sum(b);
  }
  Tensor mean = scale(acc_, 1.f / static_cast<float>(micro_total_));
  int64_t off = 0;
  for (Tensor& p : params_) {
    p.set_grad(mean.narrow_view(0, off, p.numel()).view(p.shape()));
    off += p.numel();
  }
  acc_ = Tensor();
  added_ = 0;
}

Tensor GradSync::mean(const Tensor& values) {
  if (micro_total_ == 1) return values;
  NoGrad ng;
  Tensor v = values.contiguous().clone();
  comm_.sum(v);
  return scale(v, 1.f / static_cast<float>(micro_total_));
}

}  // namespace mokd
