// Joining the data-parallel job mokd_train was launched in (docs/distributed.md): mpirun, srun,
// torchrun or plain one process, as dist/launch.h reads it.
#pragma once
#include <memory>

#include "dist/communicator.h"
#include "dist/launch.h"
#include "mokd/config.h"

namespace mokd {

struct Job {
  dist::Launch launch;
  std::unique_ptr<dist::Communicator> comm;
  bool lead() const { return launch.rank == 0; }
};

// Resolves who this process is (the launcher's variables, overridden by dist.*), gives it its GPU
// when the run is on CUDA (run.device becomes cuda:<local rank modulo the visible GPUs>),
// connects (dist/connect.h) and refuses two ranks landing on one GPU by that rule (or under
// NCCL), naming both; an explicit run.device=cuda:N shares a GPU on purpose (MPI). One process: a
// local communicator, cfg unchanged.
Job join_job(TrainConfig& cfg, const dist::Environment& env);

}  // namespace mokd
