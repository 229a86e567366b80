#include "mokd/grad_sync.h"

#include <algorithm>
#include <string>

#include "engine/autograd.h"
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
  for (size_t i = 0; i < params_.size(); ++i) {
    offsets_.push_back(off);
    bucket_of_.push_back(static_cast<int>(buckets_.size()));
    index_[params_[i].impl()] = i;
    off += params_[i].numel();
    if (off - begin >= (buckets_.empty() ? first : rest)) {
      buckets_.push_back({begin, off - begin});
      begin = off;
    }
  }
  if (off > begin) buckets_.push_back({begin, off - begin});
  numel_ = off;
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
  take(concat(parts, 0));
}

// A micro-batch's whole flat gradient joins the step.
void GradSync::take(const Tensor& flat) {
  if (gather_)
    micro_.push_back(flat);
  else
    acc_ = added_ == 0 ? flat : mokd::add(acc_, flat);
  ++added_;
}

void GradSync::backward(const Tensor& loss) {
  const bool last = added_ + 1 == micro_per_rank_;
  if (bypass_ || !last || comm_.world() == 1) {  // nothing to overlap with
    loss.backward();
    add();
    return;
  }
  MOKD_CHECK(added_ < micro_per_rank_, "GradSync: ", added_ + 1,
             " micro-batches added to a step of ", micro_per_rank_);
  // This rank's last micro-batch: each parameter's gradient moves into the flat buffer as soon
  // as backward has finished it, and each bucket starts its reduction as soon as it is whole
  // (buckets in order, the same on every rank).
  const Device dev = params_[0].device();
  Tensor cur = Tensor::zeros({numel_}, DType::F32, dev);
  if (!gather_ && added_ == 0) acc_ = cur;
  std::vector<int64_t> left(buckets_.size(), 0);
  for (int b : bucket_of_) ++left[static_cast<size_t>(b)];
  pending_.clear();
  pending_.resize(buckets_.size());
  launched_ = 0;
  auto launch_ready = [&] {
    while (launched_ < buckets_.size() && left[launched_] == 0) launch(launched_++, cur);
  };
  {
    LeafReadyHook hook([&](const std::shared_ptr<TensorImpl>& leaf) {
      auto it = index_.find(leaf.get());
      if (it == index_.end() || !leaf->grad) return;
      NoGrad ng;
      const size_t i = it->second;
      Tensor g(leaf->grad);
      cur.narrow_view(0, offsets_[i], params_[i].numel()).copy_(g.contiguous().view({-1}));
      leaf->grad.reset();
      --left[static_cast<size_t>(bucket_of_[i])];
      launch_ready();
    });
    loss.backward();
  }
  NoGrad ng;
  // Parameters backward did not reach keep zeros; their buckets go now, in order.
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor g = params_[i].grad();
    if (g.defined()) {  // a leaf the hook did not see (e.g. the loss itself)
      cur.narrow_view(0, offsets_[i], params_[i].numel()).copy_(g.contiguous().view({-1}));
      params_[i].zero_grad();
    }
  }
  std::fill(left.begin(), left.end(), 0);
  launch_ready();
  if (gather_) micro_.push_back(cur);
  ++added_;
  overlapped_ = true;
}

// Starts bucket b's reduction; `cur` is the last micro-batch's buffer (its bucket is final).
void GradSync::launch(size_t b, const Tensor& cur) {
  const auto [off, len] = buckets_[b];
  NoGrad ng;
  if (gather_) {
    std::vector<Tensor> mine;
    for (const Tensor& m : micro_) mine.push_back(m.narrow_view(0, off, len));
    mine.push_back(cur.narrow_view(0, off, len));
    start_gather(b, mine);
  } else {
    Tensor slice = acc_.narrow_view(0, off, len);
    if (acc_.impl() != cur.impl()) slice.copy_(mokd::add(slice, cur.narrow_view(0, off, len)));
    pending_[b] = comm_.sum_async(slice);
  }
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
    for (size_t b = 0; b < buckets_.size(); ++b) {
      const auto [off, len] = buckets_[b];
      if (!overlapped_) {  // every micro-batch added after its backward: gather now
        std::vector<Tensor> mine;
        for (const Tensor& m : micro_) mine.push_back(m.narrow_view(0, off, len));
        start_gather(b, mine);
      }
      pieces.push_back(add_gathered(b, len));
    }
    sum = concat(pieces, 0).to(dev);
  } else {
    sum = acc_;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      if (!overlapped_) {
        Tensor slice = sum.narrow_view(0, buckets_[b].first, buckets_[b].second);
        pending_.resize(buckets_.size());
        pending_[b] = comm_.sum_async(slice);
      }
      pending_[b]->wait();
    }
  }
  Tensor mean = micro_total_ == 1 ? sum : scale(sum, 1.f / static_cast<float>(micro_total_));
  for (size_t i = 0; i < params_.size(); ++i)
    params_[i].set_grad(
        mean.narrow_view(0, offsets_[i], params_[i].numel()).view(params_[i].shape()));
  acc_ = Tensor();
  micro_.clear();
  gathers_.clear();
  pending_.clear();
  added_ = 0;
  overlapped_ = false;
}

// Starts gathering this rank's micro-batch slices (one per micro-batch, in order) from every rank,
// as gather `key` (a bucket, or past the buckets for logged values). Host copies: the ordered
// addition runs on the host.
void GradSync::start_gather(size_t key, const std::vector<Tensor>& slices) {
  std::vector<Tensor> host;
  for (const Tensor& t : slices) host.push_back(t.to(Device::cpu()));
  Pending p;
  p.local = concat(host, 0);
  p.all = Tensor::empty({micro_total_ * slices[0].numel()});
  p.request = comm_.gather_async(p.local, p.all);
  gathers_[key] = std::move(p);
}

// Bucket b's gathered micro-batches added left to right (the step's order), on the host: the same
// additions one process makes in place.
Tensor GradSync::add_gathered(size_t b, int64_t len) {
  Pending& p = gathers_.at(b);
  p.request->wait();
  std::vector<const float*> parts;
  for (int64_t i = 0; i < micro_total_; ++i) parts.push_back(p.all.data<float>() + i * len);
  Tensor out = Tensor::empty({len});
  dist::add_in_order(parts, len, out.data<float>());
  return out;
}

Tensor GradSync::mean(const std::vector<Tensor>& values) {
  MOKD_CHECK(static_cast<int64_t>(values.size()) == micro_per_rank_,
             "GradSync::mean: ", values.size(), " values for ", micro_per_rank_, " micro-batches");
  if (bypass_) return values[0];
  NoGrad ng;
  Tensor sum;
  if (gather_) {
    std::vector<Tensor> mine;
    for (const Tensor& v : values) mine.push_back(v.contiguous().view({-1}));
    const size_t key = buckets_.size();  // past the gradient buckets
    start_gather(key, mine);
    sum = add_gathered(key, mine[0].numel()).to(values[0].device());
    gathers_.erase(key);
  } else {
    for (const Tensor& v : values) sum = sum.defined() ? mokd::add(sum, v) : v.contiguous().clone();
    comm_.sum(sum);
  }
  return micro_total_ == 1 ? sum : scale(sum, 1.f / static_cast<float>(micro_total_));
}

}  // namespace mokd
