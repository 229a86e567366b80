// The gradient of one optimizer step over several micro-batches: optim.accum_steps on this
// process times the processes of a data-parallel run (docs/distributed.md).
//
//   for each micro-batch of this process:  forward, sync.backward(loss) (or backward, sync.add())
//   sync.finish()        every rank now holds the mean gradient of all the step's micro-batches
//   clip, optimizer step (identical on every rank)
//
// add() moves the parameters' gradients into a flat buffer laid out in reverse parameter order (the
// order backward produces them). finish() reduces the step's micro-batches in buckets of that
// buffer (a 1 MiB first bucket, then dist.bucket_mb; every rank issues them in the same order),
// scales by 1 / micro_batches(), and makes every parameter's .grad a view of the result.
//
// The order of the sum is fixed by the data, not by the layout: with an ordered communicator
// (MPI, one process) every micro-batch of the step is added left to right in its place in the
// step, g_0 + g_1 + ... + g_{N-1}. One process accumulates in place in that order; several ranks
// gather every rank's micro-batch gradients (rank r holds micro-batches r x A ... r x A + A - 1)
// and add them in that order on every rank. So 3 ranks x 2 micro-batches, 2 x 3 and 1 x 6 give the
// same bits. With NCCL each rank adds its own micro-batches, then NCCL sums the ranks in its own
// order (within f32 rounding of the ordered sum).
//
// mean() does the same for values the step logs and FAMO uses (losses before and after).
// With one micro-batch in all and the local communicator, every call is a no-op and .grad stays
// where backward put it; a one-rank MPI or NCCL job runs the whole path (what its overhead is).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "dist/communicator.h"
#include "engine/tensor.h"

namespace mokd {

class GradSync {
 public:
  // params: what the optimizer updates; comm must outlive this.
  GradSync(std::vector<Tensor> params, dist::Communicator& comm, int64_t micro_per_rank,
           double bucket_mb);

  // After a micro-batch's backward: its gradients join the accumulator and leave the parameters
  // (a parameter without one counts as zeros).
  void add();
  // loss.backward() and add() in one: on this rank's last micro-batch of a job of several ranks,
  // each bucket's reduction starts as soon as backward has finished its gradients (in bucket
  // order), overlapping the rest of backward, as DDP does. The result is the same as add().
  void backward(const Tensor& loss);
  // After the last micro-batch of the step.
  void finish();
  // values: one [K] f32 tensor per micro-batch of this rank, in order; returns the mean over
  // every micro-batch of the step, identical on every rank.
  Tensor mean(const std::vector<Tensor>& values);

  int64_t micro_batches() const { return micro_total_; }  // of the whole step, all ranks
  int64_t micro_per_rank() const { return micro_per_rank_; }
  dist::Communicator& comm() { return comm_; }
  // The buckets as [offset, length) in floats of the flat buffer (for docs and tests).
  const std::vector<std::pair<int64_t, int64_t>>& buckets() const { return buckets_; }

 private:
  std::vector<Tensor> params_;  // reverse order
  dist::Communicator& comm_;
  int64_t micro_per_rank_, micro_total_;
  struct Pending {  // a gather in flight
    Tensor local, all;
    std::unique_ptr<dist::Request> request;
  };
  void take(const Tensor& flat);
  void launch(size_t bucket, const Tensor& cur);
  void start_gather(size_t key, const std::vector<Tensor>& slices);
  Tensor add_gathered(size_t bucket, int64_t len);

  bool bypass_;  // one micro-batch, no communicator: nothing to do
  // An ordered communicator of several ranks: every rank's micro-batch gradients are gathered and
  // added in the step's order; otherwise each rank accumulates in place and the ranks are summed.
  bool gather_;
  std::vector<int64_t> offsets_;  // per parameter (reverse order), in the flat buffer
  std::vector<int> bucket_of_;    // per parameter
  std::unordered_map<const TensorImpl*, size_t> index_;
  int64_t numel_ = 0;
  int64_t added_ = 0;
  bool overlapped_ = false;            // this step's reductions were started during backward
  Tensor acc_;                         // flat f32, reverse parameter order: the running sum
  std::vector<Tensor> micro_;          // gather_: this rank's micro-batch gradients, flat
  std::map<size_t, Pending> gathers_;  // gather_: per bucket
  std::vector<std::unique_ptr<dist::Request>> pending_;  // otherwise: per bucket
  size_t launched_ = 0;
  std::vector<std::pair<int64_t, int64_t>> buckets_;
};

}  // namespace mokd
