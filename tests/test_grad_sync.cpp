// Gradient accumulation and the data-parallel reduction (mokd/grad_sync.h, dist/communicator.h):
// the accumulated step equals the mean of its micro-batches' gradients added in order, computed
// here independently; the buckets cover the flat buffer once; a rank's share of the loader's steps
// (io/loader.h, Shard) is the whole-epoch loader's batches.
#include <gtest/gtest.h>

#include <cstring>

#include "dist/communicator.h"
#include "engine/ops.h"
#include "io/loader.h"
#include "mokd/grad_sync.h"
#include "test_util.h"

namespace mokd {
namespace {

// A rank of a job whose other ranks' data is given: gather() places it around this rank's in rank
// order, as MPI_Allgather does; sum() adds in rank order, as the MPI communicator does. Calls
// consume the other ranks' data in sequence.
class ScriptedRanks final : public dist::Communicator {
 public:
  ScriptedRanks(int rank, std::vector<std::vector<float>> others)
      : rank_(rank), others_(std::move(others)) {}
  const char* name() const override { return "scripted"; }
  int rank() const override { return rank_; }
  int world() const override { return static_cast<int>(others_.size()) + 1; }
  bool ordered_sum() const override { return true; }
  void gather(const Tensor& in, Tensor& out) override {
    const int64_t n = in.numel();
    EXPECT_EQ(out.numel(), n * world());
    size_t o = 0;
    for (int r = 0; r < world(); ++r) {
      float* dst = out.data<float>() + r * n;
      if (r == rank_) {
        std::memcpy(dst, in.data<float>(), n * sizeof(float));
      } else {
        EXPECT_LE(offset_ + n, static_cast<int64_t>(others_[o].size()));
        std::memcpy(dst, others_[o].data() + offset_, n * sizeof(float));
        ++o;
      }
    }
    offset_ += n;
    ++gathers;
  }
  int gathers = 0;
  void sum(Tensor& t) override {
    Tensor all = Tensor::empty({t.numel() * world()});
    gather(t, all);
    std::vector<const float*> parts;
    for (int r = 0; r < world(); ++r) parts.push_back(all.data<float>() + r * t.numel());
    dist::add_in_order(parts, t.numel(), t.data<float>());
  }
  int64_t sum_i64(int64_t v) override { return v; }
  int64_t max_i64(int64_t v) override { return v; }
  std::vector<std::string> all_gather(const std::string& b) override { return {b}; }
  void broadcast(std::string&, int) override {}
  void barrier() override {}
  [[noreturn]] void abort(int code) override { std::exit(code); }

 private:
  int rank_;
  std::vector<std::vector<float>> others_;
  int64_t offset_ = 0;
};

Tensor param(const Shape& s) {
  Tensor p = Tensor::zeros(s);
  p.set_requires_grad(true);
  return p;
}

TEST(AddInOrder, AddsLeftToRight) {
  // ((1e8 + -1e8) + 1) = 1, whereas 1e8 + (-1e8 + 1) rounds to 0 in f32.
  const float a = 1e8f, b = -1e8f, c = 1.f;
  float out = 0;
  dist::add_in_order({&a, &b, &c}, 1, &out);
  EXPECT_EQ(out, 1.f);
  dist::add_in_order({&c, &b, &a}, 1, &out);
  EXPECT_EQ(out, 0.f);
}

TEST(GradSync, AccumulatedMicroBatchesGiveTheirMeanGradient) {
  auto comm = dist::make_local_communicator();
  Tensor w = param({3, 2}), b = param({2});
  GradSync sync({w, b}, *comm, 3, 25);
  EXPECT_EQ(sync.micro_batches(), 3);
  std::vector<std::vector<float>> gw(3), gb(3);
  for (int m = 0; m < 3; ++m) {
    for (int i = 0; i < 6; ++i) gw[m].push_back(0.1f * (m + 1) + 0.37f * i - 0.9f * (i % 2));
    gb[m] = {1e7f * (m == 0 ? 1 : -1), 0.25f + m};
    w.set_grad(Tensor::from_vector(gw[m], {3, 2}));
    b.set_grad(Tensor::from_vector(gb[m], {2}));
    sync.add();
    EXPECT_FALSE(w.grad().defined()) << "add() takes the gradient away";
  }
  sync.finish();
  const float third = 1.f / 3.f;
  auto want = [&](const std::vector<std::vector<float>>& g, size_t i) {
    return ((g[0][i] + g[1][i]) + g[2][i]) * third;
  };
  std::vector<float> w_got = w.grad().to_vector(), b_got = b.grad().to_vector();
  ASSERT_EQ(w.grad().shape(), (Shape{3, 2}));
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(w_got[i], want(gw, i)) << i;
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(b_got[i], want(gb, i)) << i;
}

TEST(GradSync, RanksAddInRankOrderAsOneProcessAddsMicroBatches) {
  // Rank 1 of 3, one micro-batch each: the other ranks' flat gradients (reverse parameter order:
  // b then w) are given; the result must equal one process accumulating the three in rank order.
  Tensor w = param({2}), b = param({1});
  std::vector<float> r0 = {5.f, 1e8f, -3.f}, r2 = {7.f, 1.f, 2.f};  // [b, w0, w1]
  ScriptedRanks comm(1, {r0, r2});
  GradSync sync({w, b}, comm, 1, 25);
  EXPECT_EQ(sync.micro_batches(), 3);
  w.set_grad(Tensor::from_vector({-1e8f, 0.5f}, {2}));
  b.set_grad(Tensor::from_vector({1.f}, {1}));
  sync.add();
  sync.finish();
  const float third = 1.f / 3.f;
  EXPECT_EQ(b.grad().to_vector()[0], ((5.f + 1.f) + 7.f) * third);
  EXPECT_EQ(w.grad().to_vector()[0], ((1e8f + -1e8f) + 1.f) * third);
  EXPECT_EQ(w.grad().to_vector()[1], ((-3.f + 0.5f) + 2.f) * third);
  Tensor losses = Tensor::from_vector({2.f, 4.f}, {2});
  ScriptedRanks comm2(1, {{1.f, 1.f}, {3.f, 1.f}});
  GradSync s2({w}, comm2, 1, 25);
  std::vector<float> m = s2.mean({losses}).to_vector();
  EXPECT_EQ(m[0], ((1.f + 2.f) + 3.f) * third);
  EXPECT_EQ(m[1], ((1.f + 4.f) + 1.f) * third);
}

TEST(GradSync, TheSumFollowsTheStepsMicroBatchesWhateverTheLayout) {
  // Rank 0 of 2 with 3 micro-batches each equals one process adding the 6 in order: rank 0 holds
  // micro-batches 0-2, rank 1 micro-batches 3-5.
  const std::vector<float> g = {1e8f, 1.f, 1.f, -1e8f, 3.f, 0.5f};
  Tensor w = param({1});
  ScriptedRanks comm(0, {{g[3], g[4], g[5]}});
  GradSync sync({w}, comm, 3, 25);
  EXPECT_EQ(sync.micro_batches(), 6);
  std::vector<Tensor> values;
  for (int m = 0; m < 3; ++m) {
    w.set_grad(Tensor::from_vector({g[m]}, {1}));
    sync.add();
  }
  sync.finish();
  float want = g[0];
  for (int m = 1; m < 6; ++m) want += g[m];
  want *= 1.f / 6.f;
  EXPECT_EQ(w.grad().to_vector()[0], want);
  // Per-rank partial sums would give ((1e8 + 1) + 1) + ((-1e8 + 3) + 0.5) = 0, not 3.5.
  const float grouped = (((g[0] + g[1]) + g[2]) + ((g[3] + g[4]) + g[5])) * (1.f / 6.f);
  EXPECT_NE(grouped, want) << "the test's values must tell the groupings apart";
  auto local = dist::make_local_communicator();
  Tensor v = param({1});
  GradSync one({v}, *local, 6, 25);
  for (int m = 0; m < 6; ++m) {
    v.set_grad(Tensor::from_vector({g[m]}, {1}));
    one.add();
    values.push_back(Tensor::from_vector({g[m]}, {1}));
  }
  one.finish();
  EXPECT_EQ(v.grad().to_vector()[0], want);
  EXPECT_EQ(one.mean(values).to_vector()[0], want);
}

TEST(GradSync, BucketsReducedDuringBackwardGiveWhatAddGives) {
  // Two parameters of 1 MiB each: two buckets (the last parameter's first). sync.backward()
  // issues both gathers before it returns; the gradients equal those of backward() then add().
  const int64_t n = (1 << 20) / 4;
  std::vector<float> xs(n), other(2 * n);
  for (int64_t i = 0; i < n; ++i) xs[i] = 0.001f * (i % 997) - 0.3f;
  for (int64_t i = 0; i < 2 * n; ++i) other[i] = 1e-3f * ((i * 7919) % 1009) - 0.5f;
  Tensor x = Tensor::from_vector(xs, {n});
  auto run = [&](bool overlap, int* gathers_in_backward) {
    Tensor w1 = param({n}), w2 = param({n});
    w1.copy_(Tensor::full({n}, 0.75));
    w2.copy_(Tensor::full({n}, -1.25));
    ScriptedRanks comm(0, {other});
    GradSync sync({w1, w2}, comm, 1, 1.0);
    EXPECT_EQ(sync.buckets().size(), 2u);
    Tensor y = sum(mul(w2, mul(w1, x)));
    if (overlap) {
      sync.backward(y);
      *gathers_in_backward = comm.gathers;
    } else {
      y.backward();
      sync.add();
    }
    sync.finish();
    return std::pair{w1.grad().to_vector(), w2.grad().to_vector()};
  };
  int during = 0;
  auto a = run(true, &during);
  auto b = run(false, nullptr);
  EXPECT_EQ(during, 2) << "both buckets started inside backward";
  EXPECT_EQ(a.first, b.first);
  EXPECT_EQ(a.second, b.second);
}

TEST(GradSync, ParametersWithoutAGradientCountAsZeros) {
  auto comm = dist::make_local_communicator();
  Tensor w = param({2});
  GradSync sync({w}, *comm, 2, 25);
  w.set_grad(Tensor::from_vector({2.f, 4.f}, {2}));
  sync.add();
  sync.add();  // no gradient this micro-batch
  sync.finish();
  EXPECT_EQ(w.grad().to_vector(), (std::vector<float>{1.f, 2.f}));
}

TEST(GradSync, OneMicroBatchLeavesTheGradientWhereBackwardPutIt) {
  auto comm = dist::make_local_communicator();
  Tensor w = param({2});
  GradSync sync({w}, *comm, 1, 25);
  Tensor g = Tensor::from_vector({3.f, 4.f}, {2});
  w.set_grad(g);
  sync.add();
  sync.finish();
  EXPECT_EQ(w.grad().impl(), g.impl());
}

TEST(GradSync, BucketsCoverTheBufferOnceInReverseParameterOrderAtParameterBoundaries) {
  // 1 MiB first bucket, then 2 MiB ones: parameters of 0.75, 0.75, 1.5, 0.25 and 3 MiB of floats.
  const int64_t q = (1 << 20) / 4 / 4;  // floats in 0.25 MiB
  std::vector<Tensor> ps = {param({3 * q}), param({3 * q}), param({6 * q}), param({q}),
                            param({12 * q})};
  auto comm = dist::make_local_communicator();
  GradSync sync(ps, *comm, 1, 2.0);
  // Reverse order 12q, q, 6q, 3q, 3q: [12q] reaches 1 MiB (4q); then q + 6q + 3q reaches 2 MiB
  // (8q); the last 3q is the remainder.
  int64_t next = 0, total = 0;
  for (const auto& [off, len] : sync.buckets()) {
    EXPECT_EQ(off, next);
    next = off + len;
    total += len;
  }
  EXPECT_EQ(total, 25 * q);
  using B = std::pair<int64_t, int64_t>;
  ASSERT_EQ(sync.buckets().size(), 3u);
  EXPECT_EQ(sync.buckets()[0], (B{0, 12 * q}));
  EXPECT_EQ(sync.buckets()[1], (B{12 * q, 10 * q}));
  EXPECT_EQ(sync.buckets()[2], (B{22 * q, 3 * q}));
}

TEST(GradSync, RefusesAStepWithMissingMicroBatches) {
  auto comm = dist::make_local_communicator();
  Tensor w = param({2});
  GradSync sync({w}, *comm, 3, 25);
  w.set_grad(Tensor::from_vector({1.f, 1.f}, {2}));
  sync.add();
  test::expect_error([&] { sync.finish(); }, {"the step ran 1 of its 3 micro-batches"});
  test::expect_error([&] { GradSync({w}, *comm, 0, 25); }, {"micro_per_rank must be >= 1"});
}

// ---- the loader's shard of every step

std::unique_ptr<data::InMemoryDataset> numbered(int64_t n) {
  std::vector<uint8_t> px;
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 4; ++k) px.push_back(static_cast<uint8_t>((i * 7 + k) % 251));
    labels.push_back(i % 3);
  }
  return std::make_unique<data::InMemoryDataset>(2, 2, 1, std::vector<std::string>{"a", "b", "c"},
                                                 px, labels);
}

data::LoaderOptions shard_options(int64_t batch, int64_t group, int64_t first, int64_t count) {
  data::LoaderOptions o;
  o.batch_size = batch;
  o.num_workers = 1;
  o.seed = 11;
  o.drop_last = true;
  o.mixup.mixup_alpha = 0.8f;
  o.mixup.cutmix_alpha = 1.0f;
  o.shard = {group, first, count};
  return o;
}

std::vector<uint8_t> bytes(const data::Batch& b) {
  const uint8_t* p = static_cast<const uint8_t*>(b.pixels.raw_data());
  return std::vector<uint8_t>(p, p + b.pixels.nbytes());
}

TEST(LoaderShard, RanksTogetherSeeTheWholeEpochsBatches) {
  auto ds = numbered(41);  // 41 / 3 = 13 batches, 4 steps of 3: one batch and 2 samples left out
  data::Loader whole(*ds, shard_options(3, 1, 0, 1));
  std::vector<data::Batch> all;
  data::Batch b;
  whole.start_epoch(2);
  while (whole.next(b)) all.push_back(b);
  ASSERT_EQ(all.size(), 13u);
  for (int r = 0; r < 3; ++r) {
    data::Loader mine(*ds, shard_options(3, 3, r, 1));
    EXPECT_EQ(mine.batches_per_epoch(), 4);
    mine.start_epoch(2);
    for (int64_t k = 0; k < 4; ++k) {
      ASSERT_TRUE(mine.next(b));
      const data::Batch& want = all[static_cast<size_t>(3 * k + r)];
      EXPECT_EQ(b.index, 3 * k + r);
      EXPECT_EQ(bytes(b), bytes(want)) << "rank " << r << " batch " << k;
      EXPECT_EQ(b.labels.to_vector_i64(), want.labels.to_vector_i64());
      EXPECT_EQ(b.soft_targets.to_vector(), want.soft_targets.to_vector());
      EXPECT_EQ(b.mix.lam, want.mix.lam);
    }
    EXPECT_FALSE(mine.next(b));
  }
  // Two micro-batches of every step on one rank of two: batches 4k+2, 4k+3.
  data::Loader acc(*ds, shard_options(3, 4, 2, 2));
  EXPECT_EQ(acc.batches_per_epoch(), 6);
  acc.start_epoch(2);
  std::vector<int64_t> idx;
  while (acc.next(b)) idx.push_back(b.index);
  EXPECT_EQ(idx, (std::vector<int64_t>{2, 3, 6, 7, 10, 11}));
}

TEST(LoaderShard, APositionResumesAtTheSameSampleUnderAnotherLayout) {
  auto ds = numbered(48);
  // Global batch 12: 2 ranks x 6 samples; stop after 2 steps.
  data::Loader two(*ds, shard_options(6, 2, 1, 1));
  two.start_epoch(0);
  data::Batch b;
  ASSERT_TRUE(two.next(b));
  ASSERT_TRUE(two.next(b));
  io::State st = two.state();
  EXPECT_EQ(st.counters.at("batch_in_epoch"), 4);  // 2 steps of 2 batches of 6
  EXPECT_EQ(st.counters.at("batch_size"), 6);
  // The same position on 3 ranks x 4 samples (rank 2) and on one process x 12.
  data::Loader three(*ds, shard_options(4, 3, 2, 1));
  three.load_state(st);
  ASSERT_TRUE(three.next(b));
  EXPECT_EQ(b.index, 2 * 3 + 2);
  data::Loader one(*ds, shard_options(12, 1, 0, 1));
  one.load_state(st);
  ASSERT_TRUE(one.next(b));
  EXPECT_EQ(b.index, 2);
  // A state written before shards existed has no batch_size: its batches were whole steps of the
  // global batch (here 12), so batch 2 is sample 24 whatever the layout now.
  io::State old;
  old.counters = {{"epoch", 0}, {"batch_in_epoch", 2}};
  three.load_state(old);
  ASSERT_TRUE(three.next(b));
  EXPECT_EQ(b.index, 2 * 3 + 2);
  // A position that is not a whole step of the new layout is refused.
  io::State odd;
  odd.counters = {{"epoch", 0}, {"batch_in_epoch", 1}, {"batch_size", 6}};
  test::expect_error([&] { one.load_state(odd); },
                     {"stopped after 6 samples of epoch 1", "not a whole number of steps of 12"});
}

TEST(LoaderShard, RefusesAShardOutsideItsStep) {
  auto ds = numbered(12);
  test::expect_error([&] { data::Loader l(*ds, shard_options(2, 2, 1, 2)); },
                     {"shard takes batches [1, 3) of steps of 2"});
}

}  // namespace
}  // namespace mokd
