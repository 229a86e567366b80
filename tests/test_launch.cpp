// Launcher conventions (dist/launch.h): every convention resolved from an environment map,
// their precedence, the dist.* overrides, each malformed value and each trap refused with its
// message. The expected values are the conventions' own definitions (torchrun, Open MPI,
// MPICH/Hydra and Slurm document what each variable holds); resolve_launch is a pure function
// of its inputs, so no fixture is involved.
#include <functional>

#include "dist/launch.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using dist::describe;
using dist::Environment;
using dist::Launch;
using dist::LaunchOverrides;
using dist::resolve_launch;
using test::expect_error;

void expect_launch(const Launch& l, int rank, int world, int local_rank, int local_world,
                   const std::string& launcher) {
  EXPECT_EQ(l.rank, rank);
  EXPECT_EQ(l.world, world);
  EXPECT_EQ(l.local_rank, local_rank);
  EXPECT_EQ(l.local_world, local_world);
  EXPECT_EQ(l.launcher, launcher);
}

// resolve_launch(env, o) must throw a mokd::Error mentioning every part.
void expect_refused(const Environment& env, const std::vector<std::string>& parts,
                    const LaunchOverrides& o = {}) {
  SCOPED_TRACE(::testing::Message() << "environment of " << env.size() << " variables");
  expect_error([&] { resolve_launch(env, o); }, parts);
}

LaunchOverrides rank_world(int rank, int world) {
  LaunchOverrides o;
  o.rank = rank;
  o.world = world;
  return o;
}

TEST(Launch, NoVariablesIsOneProcess) {
  const Launch l = resolve_launch({});
  expect_launch(l, 0, 1, 0, 1, "none");
  EXPECT_EQ(l.master_addr, "");
  EXPECT_EQ(l.master_port, 0);
  EXPECT_EQ(describe(l), "rank 0 of 1 (local 0 of 1, none)");
  // Unrelated variables and emptied ones change nothing.
  expect_launch(resolve_launch({{"HOME", "/root"}, {"RANK", ""}, {"WORLD_SIZE", ""}}), 0, 1, 0, 1,
                "none");
}

TEST(Launch, Torchrun) {
  const Launch l = resolve_launch({{"RANK", "5"},
                                   {"WORLD_SIZE", "8"},
                                   {"LOCAL_RANK", "1"},
                                   {"LOCAL_WORLD_SIZE", "4"},
                                   {"MASTER_ADDR", "node0"},
                                   {"MASTER_PORT", "29500"}});
  expect_launch(l, 5, 8, 1, 4, "torchrun");
  EXPECT_EQ(l.master_addr, "node0");
  EXPECT_EQ(l.master_port, 29500);
  EXPECT_EQ(describe(l), "rank 5 of 8 (local 1 of 4, torchrun)");
}

TEST(Launch, OpenMpi) {
  const Launch l = resolve_launch({{"OMPI_COMM_WORLD_RANK", "1"},
                                   {"OMPI_COMM_WORLD_SIZE", "4"},
                                   {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                                   {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}});
  expect_launch(l, 1, 4, 1, 2, "openmpi");
  EXPECT_EQ(describe(l), "rank 1 of 4 (local 1 of 2, openmpi)");
  EXPECT_EQ(l.master_addr, "");
  EXPECT_EQ(l.master_port, 0);
}

TEST(Launch, MasterAddressAndPortWhateverTheLauncher) {
  // mpirun users export them for NCCL's rendezvous.
  const Launch l = resolve_launch({{"OMPI_COMM_WORLD_RANK", "0"},
                                   {"OMPI_COMM_WORLD_SIZE", "2"},
                                   {"OMPI_COMM_WORLD_LOCAL_RANK", "0"},
                                   {"MASTER_ADDR", "10.0.0.1"},
                                   {"MASTER_PORT", "65535"}});
  EXPECT_EQ(l.master_addr, "10.0.0.1");
  EXPECT_EQ(l.master_port, 65535);
  LaunchOverrides o;
  o.master_addr = "head";
  o.master_port = 1;
  const Launch m = resolve_launch({{"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "7"}}, o);
  EXPECT_EQ(m.master_addr, "head");
  EXPECT_EQ(m.master_port, 1);
  expect_launch(m, 0, 1, 0, 1, "none");
}

TEST(Launch, Mpich) {
  const Launch l = resolve_launch(
      {{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "1"}});
  expect_launch(l, 2, 3, 0, 1, "mpich");
  // Without MPI_LOCALNRANKS the local world is unknown.
  const Launch u = resolve_launch({{"PMI_RANK", "2"}, {"PMI_SIZE", "3"}, {"MPI_LOCALRANKID", "1"}});
  expect_launch(u, 2, 3, 1, 0, "mpich");
  EXPECT_EQ(describe(u), "rank 2 of 3 (local 1 of ?, mpich)");
}

TEST(Launch, Slurm) {
  expect_launch(resolve_launch({{"SLURM_PROCID", "5"},
                                {"SLURM_NTASKS", "6"},
                                {"SLURM_LOCALID", "2"},
                                {"SLURM_TASKS_PER_NODE", "3(x2)"}}),
                5, 6, 2, 3, "slurm");
  // Only Slurm's variables: the world is SLURM_NTASKS, no trap.
  expect_launch(
      resolve_launch({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "0"}}), 1, 2,
      0, 0, "slurm");
  // One task of one: local numbers need no variable.
  expect_launch(resolve_launch({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "1"}}), 0, 1, 0, 1,
                "slurm");
}

TEST(Launch, SlurmTasksPerNode) {
  const Environment task{{"SLURM_PROCID", "4"}, {"SLURM_NTASKS", "8"}, {"SLURM_LOCALID", "1"}};
  const auto local_world = [&](const Environment& extra) {
    Environment env = task;
    env.insert(extra.begin(), extra.end());
    return resolve_launch(env).local_world;
  };
  EXPECT_EQ(local_world({{"SLURM_NTASKS_PER_NODE", "2"}}), 2);
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "4(x2)"}}), 4);
  // Uneven nodes: this node's entry, by SLURM_NODEID; unknown without it.
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "4,2(x2)"}, {"SLURM_NODEID", "0"}}), 4);
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "4,2(x2)"}, {"SLURM_NODEID", "2"}}), 2);
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "3,2(x2),1"}, {"SLURM_NODEID", "1"}}), 2);
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "1,3(x2),1"}, {"SLURM_NODEID", "2"}}), 3);
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "4,2(x2)"}}), 0);
  // The step's counts come before the allocation's, which come before the option's.
  EXPECT_EQ(local_world({{"SLURM_STEP_TASKS_PER_NODE", "2(x4)"},
                         {"SLURM_TASKS_PER_NODE", "4(x2)"},
                         {"SLURM_NTASKS_PER_NODE", "8"}}),
            2);
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "4(x2)"}, {"SLURM_NTASKS_PER_NODE", "8"}}), 4);
  // An allocation's count that cannot be this step's: more than SLURM_NTASKS, or not above
  // SLURM_LOCALID.
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "16"}}), 0);
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "1(x8)"}}), 0);
  EXPECT_EQ(local_world({{"SLURM_TASKS_PER_NODE", "3,2(x2),1"}, {"SLURM_NODEID", "3"}}), 0);
}

TEST(Launch, SlurmAllocationShellIsNotATask) {
  // salloc's and sbatch's shells carry the allocation's counts but no task id.
  expect_launch(
      resolve_launch(
          {{"SLURM_NTASKS", "4"}, {"SLURM_TASKS_PER_NODE", "4"}, {"SLURM_JOB_ID", "123"}}),
      0, 1, 0, 1, "none");
}

TEST(Launch, Precedence) {
  const Environment torchrun{{"RANK", "3"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "1"}};
  const Environment openmpi{{"OMPI_COMM_WORLD_RANK", "2"},
                            {"OMPI_COMM_WORLD_SIZE", "4"},
                            {"OMPI_COMM_WORLD_LOCAL_RANK", "0"}};
  const Environment mpich{{"PMI_RANK", "1"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "1"}};
  const Environment slurm{{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"}};
  const auto merge = [](std::initializer_list<Environment> parts) {
    Environment env;
    for (const Environment& p : parts) env.insert(p.begin(), p.end());
    return env;
  };
  expect_launch(resolve_launch(merge({torchrun, openmpi, mpich, slurm})), 3, 4, 1, 0, "torchrun");
  expect_launch(resolve_launch(merge({openmpi, mpich, slurm})), 2, 4, 0, 0, "openmpi");
  expect_launch(resolve_launch(merge({mpich, slurm})), 1, 4, 1, 0, "mpich");
  expect_launch(resolve_launch(merge({slurm})), 0, 4, 0, 0, "slurm");
  // srun starting one torchrun per node: Slurm's task count is the number of torchruns.
  expect_launch(
      resolve_launch(merge(
          {{{"RANK", "5"}, {"WORLD_SIZE", "8"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "4"}},
           {{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "2"}}})),
      5, 8, 1, 4, "torchrun");
}

TEST(Launch, LocalNumbersFromALowerConventionOfTheSameProcess) {
  // srun --mpi=pmi2: PMI_RANK and PMI_SIZE, the local id as SLURM_LOCALID.
  expect_launch(resolve_launch({{"PMI_RANK", "3"},
                                {"PMI_SIZE", "4"},
                                {"SLURM_PROCID", "3"},
                                {"SLURM_NTASKS", "4"},
                                {"SLURM_LOCALID", "1"},
                                {"SLURM_STEP_TASKS_PER_NODE", "2(x2)"}}),
                3, 4, 1, 2, "mpich");
  // Another process's local id (Slurm's rank differs) is not used.
  expect_refused(
      {{"RANK", "5"},
       {"WORLD_SIZE", "8"},
       {"SLURM_PROCID", "1"},
       {"SLURM_NTASKS", "2"},
       {"SLURM_LOCALID", "1"}},
      {"rank 5 of 8", "torchrun", "no local rank", "LOCAL_RANK is not set", "dist.local_rank"});
}

TEST(Launch, Overrides) {
  LaunchOverrides o = rank_world(2, 4);
  o.local_rank = 0;
  const Launch alone = resolve_launch({}, o);
  expect_launch(alone, 2, 4, 0, 0, "config");
  EXPECT_EQ(describe(alone), "rank 2 of 4 (local 0 of ?, config)");
  // dist.world = 1 alone is a complete one-process launch.
  LaunchOverrides one;
  one.world = 1;
  expect_launch(resolve_launch({}, one), 0, 1, 0, 1, "config");
  // Over a launcher: rank and world from the keys; the launcher's local numbers still apply
  // when its rank and world are the same.
  const Environment torchrun{
      {"RANK", "2"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "0"}, {"LOCAL_WORLD_SIZE", "2"}};
  expect_launch(resolve_launch(torchrun, rank_world(2, 4)), 2, 4, 0, 2, "config");
  LaunchOverrides other = rank_world(1, 2);
  other.local_rank = 1;
  expect_launch(resolve_launch(torchrun, other), 1, 2, 1, 0, "config");
  // One key over a launcher: the rest is the launcher's, and so is the name.
  LaunchOverrides local;
  local.local_rank = 1;
  expect_launch(resolve_launch(torchrun, local), 2, 4, 1, 2, "torchrun");
  LaunchOverrides world;
  world.world = 4;
  expect_launch(resolve_launch(torchrun, world), 2, 4, 0, 2, "torchrun");
  // Another rank than the launcher's: its local numbers are another process's.
  LaunchOverrides rank;
  rank.rank = 3;
  expect_refused(torchrun,
                 {"rank 3 of 4", "LOCAL_RANK belongs to torchrun's rank 2 of 4", "dist.local_rank"},
                 rank);
  rank.local_rank = 1;
  expect_launch(resolve_launch(torchrun, rank), 3, 4, 1, 0, "torchrun");
  // One process on the second GPU.
  expect_launch(resolve_launch({}, local), 0, 1, 1, 1, "none");
}

TEST(Launch, RefusesMalformedIntegers) {
  for (const std::string bad : {"abc", "1x", "+1", " 1", "1 ", "0x10", "1.0", "-", "--1", "1e3"})
    expect_refused({{"RANK", bad}, {"WORLD_SIZE", "4"}},
                   {"RANK='" + bad + "'", "torchrun", "not an integer"});
  expect_refused({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "99999999999"}},
                 {"OMPI_COMM_WORLD_SIZE='99999999999'", "openmpi", "out of range"});
  expect_refused({{"PMI_RANK", "0"}, {"PMI_SIZE", "2"}, {"MPI_LOCALRANKID", "one"}},
                 {"MPI_LOCALRANKID='one'", "mpich", "not an integer"});
  expect_refused({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2 "}},
                 {"SLURM_NTASKS='2 '", "slurm", "not an integer"});
  expect_refused({{"MASTER_PORT", "http"}}, {"MASTER_PORT='http'", "not an integer"});
}

TEST(Launch, RefusesValuesOutOfRange) {
  expect_refused({{"RANK", "0"}, {"WORLD_SIZE", "0"}}, {"WORLD_SIZE=0", "torchrun", "at least 1"});
  expect_refused({{"RANK", "4"}, {"WORLD_SIZE", "4"}},
                 {"RANK=4", "torchrun", "outside [0, 4)", "WORLD_SIZE=4"});
  expect_refused({{"OMPI_COMM_WORLD_RANK", "-1"}, {"OMPI_COMM_WORLD_SIZE", "4"}},
                 {"OMPI_COMM_WORLD_RANK=-1", "outside [0, 4)"});
  expect_refused({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "-1"}},
                 {"LOCAL_RANK=-1", "torchrun", "0 or more"});
  expect_refused({{"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"}, {"SLURM_LOCALID", "-2"}},
                 {"SLURM_LOCALID=-2", "slurm", "0 or more"});
  expect_refused({{"RANK", "0"}, {"WORLD_SIZE", "4"}, {"LOCAL_WORLD_SIZE", "8"}},
                 {"LOCAL_WORLD_SIZE=8", "WORLD_SIZE=4"});
  expect_refused({{"PMI_RANK", "0"}, {"PMI_SIZE", "4"}, {"MPI_LOCALNRANKS", "0"}},
                 {"MPI_LOCALNRANKS=0", "mpich"});
  expect_refused(
      {{"RANK", "1"}, {"WORLD_SIZE", "4"}, {"LOCAL_RANK", "2"}, {"LOCAL_WORLD_SIZE", "2"}},
      {"LOCAL_RANK=2", "outside [0, 2)", "LOCAL_WORLD_SIZE=2"});
  // Local numbers from two conventions that do not fit together.
  expect_refused({{"PMI_RANK", "1"},
                  {"PMI_SIZE", "4"},
                  {"MPI_LOCALRANKID", "3"},
                  {"SLURM_PROCID", "1"},
                  {"SLURM_NTASKS", "4"},
                  {"SLURM_NTASKS_PER_NODE", "2"}},
                 {"local rank 3", "MPI_LOCALRANKID", "outside [0, 2)", "SLURM_NTASKS_PER_NODE=2"});
  for (const std::string port : {"0", "65536", "-1"})
    expect_refused({{"MASTER_PORT", port}}, {"MASTER_PORT=" + port, "1 to 65535"});
}

TEST(Launch, RefusesMalformedSlurmTaskCounts) {
  for (const std::string bad : {"a", "2,", "2(x)", "2(3)", "2(x0)", "0", "2(x2", "(x2)"})
    expect_refused({{"SLURM_PROCID", "0"},
                    {"SLURM_NTASKS", "4"},
                    {"SLURM_LOCALID", "0"},
                    {"SLURM_TASKS_PER_NODE", bad}},
                   {"SLURM_TASKS_PER_NODE='" + bad + "'", "expected task counts"});
  expect_refused({{"SLURM_PROCID", "0"},
                  {"SLURM_NTASKS", "4"},
                  {"SLURM_LOCALID", "0"},
                  {"SLURM_TASKS_PER_NODE", "2,1(x2)"},
                  {"SLURM_NODEID", "3"}},
                 {"SLURM_NODEID=3", "3 nodes", "SLURM_TASKS_PER_NODE='2,1(x2)'"});
}

TEST(Launch, RefusesHalfAConvention) {
  expect_refused({{"RANK", "1"}}, {"RANK=1 is set", "WORLD_SIZE is not", "torchrun"});
  expect_refused({{"WORLD_SIZE", "4"}}, {"WORLD_SIZE=4 is set", "RANK is not"});
  expect_refused({{"LOCAL_RANK", "0"}}, {"LOCAL_RANK=0 is set", "RANK and WORLD_SIZE are not"});
  expect_refused({{"OMPI_COMM_WORLD_RANK", "0"}},
                 {"OMPI_COMM_WORLD_RANK=0", "OMPI_COMM_WORLD_SIZE is not", "openmpi"});
  expect_refused({{"PMI_SIZE", "2"}}, {"PMI_SIZE=2", "PMI_RANK is not", "mpich"});
  expect_refused({{"SLURM_PROCID", "0"}}, {"SLURM_PROCID=0", "SLURM_NTASKS is not", "slurm"});
}

TEST(Launch, RefusesIncompleteOverrides) {
  LaunchOverrides rank;
  rank.rank = 1;
  expect_refused({}, {"dist.rank = 1", "no launcher gives the world size", "dist.world"}, rank);
  LaunchOverrides world;
  world.world = 4;
  expect_refused({}, {"dist.world = 4", "rank", "dist.rank (0 to 3)"}, world);
  LaunchOverrides zero;
  zero.world = 0;
  expect_refused({}, {"dist.world = 0", "at least 1"}, zero);
  expect_refused({}, {"rank 4 (dist.rank)", "outside [0, 4)", "dist.world"}, rank_world(4, 4));
  // A rank from the keys beyond the launcher's world.
  rank.rank = 5;
  expect_refused({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "4"}},
                 {"rank 5 (dist.rank)", "outside [0, 4)", "OMPI_COMM_WORLD_SIZE=4"}, rank);
  // Several processes from the keys need a local rank.
  expect_refused({}, {"rank 1 of 2", "config", "no local rank", "set dist.local_rank"},
                 rank_world(1, 2));
  for (const int port : {0, 65536}) {
    LaunchOverrides o;
    o.master_port = port;
    expect_refused({}, {"dist.master_port = " + std::to_string(port), "1 to 65535"}, o);
  }
}

TEST(Launch, RefusesSeveralProcessesWithoutALocalRank) {
  expect_refused({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "4"}},
                 {"rank 1 of 4", "slurm", "SLURM_LOCALID is not set", "dist.local_rank"});
  expect_refused({{"PMI_RANK", "1"}, {"PMI_SIZE", "4"}},
                 {"rank 1 of 4", "mpich", "MPI_LOCALRANKID is not set", "dist.local_rank"});
  expect_refused({{"RANK", "1"}, {"WORLD_SIZE", "2"}}, {"LOCAL_RANK is not set"});
}

TEST(Launch, RefusesSlurmTasksSeeingAWorldOfOne) {
  const Environment slurm{{"SLURM_PROCID", "2"}, {"SLURM_NTASKS", "4"}, {"SLURM_LOCALID", "0"}};
  const auto with = [&](const Environment& extra) {
    Environment env = slurm;
    env.insert(extra.begin(), extra.end());
    return env;
  };
  const std::vector<std::string> mpi_advice{
      "Slurm started 4 tasks",        "SLURM_NTASKS=4",  "world of 1", "its own copy", "singleton",
      "mpirun inside the allocation", "srun --mpi=pmix", "dist.* keys"};
  std::vector<std::string> parts = mpi_advice;
  parts.push_back("OMPI_COMM_WORLD_SIZE=1 (openmpi)");
  expect_refused(with({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}}), parts);
  parts = mpi_advice;
  parts.push_back("PMI_SIZE=1 (mpich)");
  expect_refused(with({{"PMI_RANK", "0"}, {"PMI_SIZE", "1"}}), parts);
  expect_refused(with({{"RANK", "0"}, {"WORLD_SIZE", "1"}}),
                 {"Slurm started 4 tasks", "WORLD_SIZE=1 (torchrun)", "one-process torchrun"});
  LaunchOverrides one;
  one.world = 1;
  expect_refused(slurm, {"Slurm started 4 tasks", "dist.world = 1 is set", "srun -n 1"}, one);
  // The keys giving the real world settle it; one task seeing one process is no trap.
  expect_launch(resolve_launch(with({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "1"}}),
                               rank_world(2, 4)),
                2, 4, 0, 0, "config");
  expect_launch(resolve_launch({{"SLURM_PROCID", "0"},
                                {"SLURM_NTASKS", "1"},
                                {"OMPI_COMM_WORLD_RANK", "0"},
                                {"OMPI_COMM_WORLD_SIZE", "1"}}),
                0, 1, 0, 1, "openmpi");
}

TEST(Launch, RefusesLaunchersDisagreeingOnTheWorld) {
  expect_refused({{"RANK", "0"},
                  {"WORLD_SIZE", "4"},
                  {"OMPI_COMM_WORLD_RANK", "0"},
                  {"OMPI_COMM_WORLD_SIZE", "2"}},
                 {"disagree", "WORLD_SIZE=4 (torchrun)", "OMPI_COMM_WORLD_SIZE=2 (openmpi)",
                  "dist.rank and dist.world"});
  expect_refused({{"OMPI_COMM_WORLD_RANK", "0"},
                  {"OMPI_COMM_WORLD_SIZE", "2"},
                  {"PMI_RANK", "0"},
                  {"PMI_SIZE", "3"}},
                 {"OMPI_COMM_WORLD_SIZE=2 (openmpi)", "PMI_SIZE=3 (mpich)"});
  // Same world, other ranks: the higher one wins.
  expect_launch(resolve_launch({{"RANK", "1"},
                                {"WORLD_SIZE", "2"},
                                {"LOCAL_RANK", "1"},
                                {"OMPI_COMM_WORLD_RANK", "0"},
                                {"OMPI_COMM_WORLD_SIZE", "2"}}),
                1, 2, 1, 0, "torchrun");
  // dist.rank and dist.world settle a disagreement.
  LaunchOverrides o = rank_world(1, 4);
  o.local_rank = 1;
  expect_launch(resolve_launch({{"RANK", "1"},
                                {"WORLD_SIZE", "4"},
                                {"OMPI_COMM_WORLD_RANK", "0"},
                                {"OMPI_COMM_WORLD_SIZE", "2"}},
                               o),
                1, 4, 1, 0, "config");
}

}  // namespace
}  // namespace mokd
