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
  // This process's index among the processes of the job on its node (it picks the GPU), and
  // their number; local_world is 0 when the launcher does not say (MPICH without
  // MPI_LOCALNRANKS, Slurm without a tasks-per-node count).
  int local_rank = 0, local_world = 1;
  std::string launcher = "none";  // none, torchrun, openmpi, slurm, mpich, config
  std::string master_addr;        // torchrun's rendezvous (NCCL without MPI); may be empty
  int master_port = 0;            // 0: not given
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
//
// The rules in detail:
//  - A convention is present when any of its variables is set (for Slurm: SLURM_PROCID or
//    SLURM_LOCALID, the per-task ones; SLURM_NTASKS alone is an allocation's shell, not a task).
//    A present convention needs its rank and world variables; its local ones are optional.
//    A variable set to the empty string counts as unset.
//  - Values are decimal integers, the whole string ("+1", " 1", "1x", "0x10" are refused), in
//    the range of int; world >= 1, 0 <= rank < world, 0 <= local rank < local world <= world.
//  - The highest present convention gives rank and world (each unless overridden). The local
//    rank and local world come from the highest convention whose rank and world are the
//    resolved ones, so a lower one fills in what the top one lacks when it describes the same
//    process (srun --mpi=pmi2 sets PMI_RANK and PMI_SIZE, the local id only as SLURM_LOCALID).
//  - torchrun, Open MPI and MPICH must agree on the world size when several are present;
//    Slurm's task count may differ (srun starting one torchrun or one mpirun daemon per node).
//    Setting both dist.rank and dist.world settles a disagreement.
//  - Slurm's local world: SLURM_STEP_TASKS_PER_NODE, SLURM_TASKS_PER_NODE (Slurm's "2(x3),1"
//    form, this node's entry by SLURM_NODEID) or SLURM_NTASKS_PER_NODE, the first one set; a
//    count that cannot be this step's (above SLURM_NTASKS, or not above SLURM_LOCALID: the
//    allocation's rather than the step's) leaves it unknown.
//  - A world of more than 1 without a local rank is refused (a wrong one would put two ranks
//    on one GPU); with a world of 1 the local rank is 0.
//  - launcher: "config" when dist.rank and dist.world both come from the overrides (or
//    dist.world = 1 alone, without any launcher), else the highest present convention, else
//    "none". master_addr and master_port: dist.master_addr / dist.master_port, else MASTER_ADDR
//    and MASTER_PORT whatever the launcher (1..65535).
Launch resolve_launch(const Environment& env, const LaunchOverrides& overrides = {});

// One line for progress output and errors: "rank 1 of 4 (local 1 of 2, openmpi)"; an unknown
// local world reads "local 1 of ?".
std::string describe(const Launch& launch);

}  // namespace mokd::dist
