// The gradient of one optimizer step over several micro-batches: optim.accum_steps on this
// process times the processes of a data-parallel run (docs/distributed.md).
//
//   for each micro-batch of this process:  forward, backward, sync.add()
//   sync.finish()        every rank now holds the mean gradient of all the step's micro-batches
//   clip, optimizer step (identical on every rank)
//
// add() moves the parameters' gradients into one flat accumulator, laid out in reverse parameter
// order (the order backward produces them): the first micro-batch's copied, later ones added in
// order. finish() sums the accumulators of all ranks in buckets of that buffer (a 1 MiB first
// bucket, then dist.bucket_mb; every rank issues them in the same order), scales by
// 1 / micro_batches(), and makes every parameter's .grad a view of the result. With an ordered
// communicator (MPI, one process) the sum is (((g_0 + g_1) + g_2) + ...) over the step's
// micro-batches in order whether they ran on one process or on as many ranks, so N ranks equal
// one process accumulating N micro-batches bit for bit.
//
// mean() does the same for values the step logs and FAMO uses (losses before and after).
// With one micro-batch in all, every call is a no-op and .grad stays where backward put it.
#pragma once
#include <cstdint>
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
  // After the last micro-batch of the step.
  void finish();
  // values: this rank's sum over its micro-batches, added in order (a [K] f32 tensor); returns
  // the mean over every micro-batch of the step, identical on every rank.
  Tensor mean(const Tensor& values);

  int64_t micro_batches() const { return micro_total_; }  // of the whole step, all ranks
  int64_t micro_per_rank() const { return micro_per_rank_; }
  dist::Communicator& comm() { return comm_; }
  // The buckets as [offset, length) in floats of the flat buffer (for docs and tests).
  const std::vector<std::pair<int64_t, int64_t>>& buckets() const { return buckets_; }

 private:
  std::vector<Tensor> params_;  // reverse order
  dist::Communicator& comm_;
  int64_t micro_per_rank_, micro_total_;
  int64_t added_ = 0;
  Tensor acc_;  // flat f32, reverse parameter order
  std::vector<std::pair<int64_t, int64_t>> buckets_;
};

}  // namespace mokd
