// Choosing a communicator for a launch (dist/connect.h) and splitting the global batch
// (mokd/setup.h): what a launch that cannot work says.
#include <gtest/gtest.h>

#include "dist/connect.h"
#include "mokd/config.h"
#include "mokd/setup.h"
#include "test_util.h"

namespace mokd {
namespace {

dist::Launch launch_of(int rank, int world, int local_rank = 0) {
  dist::Launch l;
  l.rank = rank;
  l.world = world;
  l.local_rank = local_rank;
  l.local_world = world;
  l.launcher = "openmpi";
  return l;
}

TEST(Connect, OneProcessIsLocal) {
  auto c = dist::connect(launch_of(0, 1), "auto", Device::cpu(), 10);
  EXPECT_STREQ(c->name(), "local");
  EXPECT_EQ(c->world(), 1);
  EXPECT_EQ(c->sum_i64(5), 5);
  EXPECT_EQ(c->all_gather("x"), (std::vector<std::string>{"x"}));
}

TEST(Connect, RefusesWhatCannotWork) {
  test::expect_error([] { dist::connect(launch_of(0, 2), "local", Device::cpu(), 10); },
                     {"dist.backend = local runs one process", "openmpi", "started 2"});
  test::expect_error([] { dist::connect(launch_of(0, 1), "gloo", Device::cpu(), 10); },
                     {"dist.backend 'gloo'", "auto, local, mpi or nccl"});
  test::expect_error([] { dist::connect(launch_of(0, 2), "nccl", Device::cpu(), 10); }, {"nccl"});
}

TEST(Connect, ABinaryWithoutMpiSaysSoForSeveralProcesses) {
  if (dist::built_with_mpi()) GTEST_SKIP() << "this binary has MPI: the refusal is not compiled in";
  test::expect_error(
      [] { dist::connect(launch_of(1, 3), "auto", Device::cpu(), 10); },
      {"built without MPI", "cannot run 3 processes", "libopenmpi-dev", "-DMOKD_MPI=ON"});
}

TEST(Connect, ABinaryWithoutNcclSaysSoForGpuRanks) {
  if (dist::built_with_nccl())
    GTEST_SKIP() << "this binary has NCCL: the refusal is not compiled in";
  test::expect_error([] { dist::connect(launch_of(0, 2), "nccl", Device::cuda(0), 10); },
                     {"built without NCCL", "-DMOKD_NCCL=ON"});
}

TEST(Connect, TheGpuOfARankIsItsLocalRankModuloTheVisibleGpus) {
  EXPECT_EQ(dist::device_for_rank(launch_of(5, 8, 5), 8), 5);
  EXPECT_EQ(dist::device_for_rank(launch_of(5, 8, 5), 4), 1);
  EXPECT_EQ(dist::device_for_rank(launch_of(3, 8, 3), 1), 0);  // srun --gpus-per-task=1
  test::expect_error([] { dist::device_for_rank(launch_of(1, 2, 1), 0); }, {"rank 1 sees no GPU"});
}

TEST(Connect, TheGlobalBatchSplitsIntoProcessesAndMicroBatches) {
  TrainConfig c;
  c.data.batch_size = 36;
  c.optim.accum_steps = 2;
  EXPECT_EQ(micro_batch_size(c, 3), 6);
  EXPECT_EQ(micro_batch_size(c, 1), 18);
  c.optim.accum_steps = 5;
  test::expect_error([&] { micro_batch_size(c, 3); },
                     {"data.batch_size = 36", "does not split into 3 process(es) x 5",
                      "optim.accum_steps", "multiple of 15"});
}

}  // namespace
}  // namespace mokd
