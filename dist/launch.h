// Who this process is in a data-parallel run, from the launcher's environment: torchrun (RANK,
// WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), Open MPI's mpirun
// (OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK, _LOCAL_SIZE), Slurm's srun (SLURM_PROCID,
// SLURM_NTASKS, SLURM_LOCALID) or MPICH/Hydra (PMI_RANK, PMI_SIZE, MPI_LOCALRANKID), with the
// `dist.*` keys overriding any of them. No variable at all: one process, rank 0 of 1.
//
// Known traps are refused with a message saying what happened and what to do, instead of a run
// that silently trains N copies of the same model: e.g. Slurm started several tasks but the
// process sees a world of 1 (an MPI without Slurm support starts singletons).
#pragma once
#include <map>
#include <string>

namespace mokd::dist {

using Environment = std::map<std::string, std::string>;

struct Launch {
  int rank = 0, world = 1;
  int local_rank = 0, local_world = 1;
  std::string launcher = "none";  // none, torchrun, openmpi, slurm, mpich, config
  std::string master_addr;        // torchrun's rendezvous (NCCL without MPI); may be empty
  int master_port = 0;
};

// The dist.* keys: a negative number or an empty string means "from the launcher".
struct LaunchOverrides {
  int rank = -1, world = -1, local_rank = -1;
  std::string master_addr;
  int master_port = -1;
};

// The process's environment as a map (what resolve_launch reads).
Environment process_environment();

// Resolves rank, world and local rank. Precedence: overrides, then torchrun, Open MPI, MPICH,
// Slurm. Throws naming the variable on a malformed value (not an integer, rank outside
// [0, world), a local rank below 0) and on the traps above.
Launch resolve_launch(const Environment& env, const LaunchOverrides& overrides = {});

}  // namespace mokd::dist
