#include "mokd/grad_sync.h"

#include <algorithm>
#include <string>

#include "engine/error.h"
#include "engine/ops.h"

namespace mokd {

GradSync::GradSync(std::vector<Tensor> params, dist::Communicator& comm, int64_t micro_per_rank,
                   double bucket_mb)
    : params_(params.rbegin(), params.rend()),
      comm_(comm),
      micro_per_rank_(micro_per_rank),
      micro_total_(micro_per_rank * comm.world()),
      bypass_(micro_total_ == 1 && std::string(comm.name()) == "local"),
      gather_(comm.ordered_sum() && comm.world() > 1) {
  MOKD_CHECK(micro_per_rank >= 1, "GradSync: micro_per_rank must be >= 1, got ", micro_per_rank);
  MOKD_CHECK(bucket_mb > 0, "dist.bucket_mb must be > 0, got ", bucket_mb);
  // Buckets cut at parameter boundaries: the first at 1 MiB (so the first reduction can start
  // early), then bucket_mb.
  const int64_t first = (1 << 20) / 4,
                rest = std::max<int64_t>(1, int64_t(bucket_mb * (1 << 20) / 4));
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
  if (bypass_) return;
  MOKD_CHECK(added_ < micro_per_rank_, "GradSync: ", added_ + 1,
             " micro-batches added to a step of ", micro_per_rank_);
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
  if (gather_)
    micro_.push_back(flat);
  else
    acc_ = added_ == 0 ? flat : mokd::add(acc_, flat);
  ++added_;
}

// Every rank's micro-batch values [off, off + len) gathered (rank-major: the step's order) and
// added left to right on the host, the same additions one process makes in place.
Tensor GradSync::reduce_in_order(const std::vector<Tensor>& micro, int64_t off, int64_t len) {
  std::vector<Tensor> mine;
  for (const Tensor& m : micro) mine.push_back(m.narrow_view(0, off, len).to(Device::cpu()));
  Tensor local = concat(mine, 0);
  Tensor all = Tensor::empty({micro_total_ * len});
  comm_.gather(local, all);
  std::vector<const float*> parts;
  for (int64_t i = 0; i < micro_total_; ++i) parts.push_back(all.data<float>() + i * len);
  Tensor out = Tensor::empty({len});
  dist::add_in_order(parts, len, out.data<float>());
  return out;
}

void GradSync::finish() {
  if (bypass_) return;
  MOKD_CHECK(added_ == micro_per_rank_, "GradSync: the step ran ", added_, " of its ",
             micro_per_rank_, " micro-batches");
  NoGrad ng;
  Tensor sum;
  if (gather_) {
    const Device dev = micro_[0].device();
    std::vector<Tensor> pieces;
    for (const auto& [off, len] : buckets_) pieces.push_back(reduce_in_order(micro_, off, len));
    sum = concat(pieces, 0).to(dev);
  } else {
    sum = acc_;
    for (const auto& [off, len] : buckets_) {
      Tensor b = sum.narrow_view(0, off, len);
      comm_.sum(b);
    }
  }
  Tensor mean = micro_total_ == 1 ? sum : scale(sum, 1.f / static_cast<float>(micro_total_));
  int64_t off = 0;
  for (Tensor& p : params_) {
    p.set_grad(mean.narrow_view(0, off, p.numel()).view(p.shape()));
    off += p.numel();
  }
  acc_ = Tensor();
  micro_.clear();
  added_ = 0;
}

Tensor GradSync::mean(const std::vector<Tensor>& values) {
  MOKD_CHECK(static_cast<int64_t>(values.size()) == micro_per_rank_,
             "GradSync::mean: ", values.size(), " values for ", micro_per_rank_, " micro-batches");
  if (bypass_) return values[0];
  NoGrad ng;
  Tensor sum;
  if (gather_) {
    std::vector<Tensor> flat;
    for (const Tensor& v : values) flat.push_back(v.contiguous().view({-1}));
    sum = reduce_in_order(flat, 0, flat[0].numel()).to(values[0].device());
  } else {
    for (const Tensor& v : values) sum = sum.defined() ? mokd::add(sum, v) : v.contiguous().clone();
    comm_.sum(sum);
  }
  return micro_total_ == 1 ? sum : scale(sum, 1.f / static_cast<float>(micro_total_));
}

}  // namespace mokd
