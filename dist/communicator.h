// Collectives between the processes of a data-parallel run (docs/distributed.md). The trainer
// talks to one Communicator whatever runs underneath:
//
//   local_communicator.cpp  one process: every collective is the identity
//   mpi_communicator.cpp    Open MPI, CPU tensors (MOKD_MPI)
//   nccl_communicator.cpp   NCCL, GPU tensors on its own stream, ordered against the compute
//                           stream by events (MOKD_NCCL)
//
// Reductions are the libraries' own collectives; mokd adds no collective algorithm. sum() of the
// MPI communicator is made bitwise reproducible by gathering every rank's slice (MPI_Allgather)
// and adding them in rank order on every rank, ((r0 + r1) + r2) + ..., the order in which one
// process adds N accumulated micro-batch gradients; gather() lets a caller add several slices per
// rank in one global order. NCCL's ring and tree sums are reproducible
// run to run but in another order: ordered_sum() says which kind a communicator is.
//
// Every rank must call the same collectives in the same order. A collective that does not complete
// within timeout_s (a rank died or hangs) throws naming the collective, instead of hanging.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace mokd::dist {

// A collective in flight: wait() returns once its result is in place, or throws after the
// communicator's timeout.
class Request {
 public:
  virtual ~Request() = default;
  virtual void wait() = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual const char* name() const = 0;  // "local", "mpi", "nccl"
  virtual int rank() const = 0;
  virtual int world() const = 0;
  // True when sum() adds in rank order (bitwise equal to one process adding in that order).
  virtual bool ordered_sum() const = 0;

  // In place, on every rank: t = sum over ranks of t. t is contiguous f32 on the device this
  // communicator serves (CPU for MPI, the GPU for NCCL).
  virtual void sum(Tensor& t) = 0;
  // Every rank's `in` (contiguous f32, n values) side by side in rank order: `out` (contiguous
  // f32, world x n values, on in's device) holds rank 0's, then rank 1's, ... The ordered way to
  // reduce the micro-batches of several ranks in one fixed order (mokd/grad_sync.h).
  virtual void gather(const Tensor& in, Tensor& out) = 0;
  // The same, started without waiting (a gradient bucket reduced while backward goes on); the
  // tensors must stay alive and untouched until wait(). By default they run at once (NCCL's
  // collectives are queued on its stream anyway).
  virtual std::unique_ptr<Request> sum_async(Tensor& t);
  virtual std::unique_ptr<Request> gather_async(const Tensor& in, Tensor& out);
  // Exact integer reductions (stop flags, evaluation counts).
  virtual int64_t sum_i64(int64_t v) = 0;
  virtual int64_t max_i64(int64_t v) = 0;
  // Every rank's bytes, in rank order (config hashes, file digests, host names).
  virtual std::vector<std::string> all_gather(const std::string& bytes) = 0;
  // bytes on `root` copied to every rank.
  virtual void broadcast(std::string& bytes, int root) = 0;
  virtual void barrier() = 0;
  // Ends every process of the job with exit status `code`, after this rank's error was printed
  // (MPI_Abort; ncclCommAbort, then exit). Never returns.
  [[noreturn]] virtual void abort(int code) = 0;
};

// One process: rank 0 of 1; every collective returns its input.
std::unique_ptr<Communicator> make_local_communicator();

// sum() of values held as host floats, in rank order: out[i] = ((parts[0][i] + parts[1][i]) + ...).
// What the ordered communicators and one process's gradient accumulation both use, so the two add
// in the same order by construction.
void add_in_order(const std::vector<const float*>& parts, int64_t n, float* out);

}  // namespace mokd::dist
