// A step's values stay on the device until read (mokd/step_stats.h): the packing and unpacking,
// the problems named on reading, and a MoKD step (FAMO, diagnostics) that makes no host read,
// whose values read later equal those of a step read at once.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "engine/host_sync.h"
#include "models/registry.h"
#include "mokd/distill.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

Tensor vec(const std::vector<float>& v) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())});
}

StepStats packed(const std::vector<float>& losses_total, float grad_norm,
                 const std::vector<float>& after = {}, const std::vector<float>& mb = {},
                 const std::vector<float>& ma = {}) {
  StepStats st;
  st.names = {"task", "kl"};
  set_pending(st, vec(losses_total), vec({grad_norm}), vec({0.25f, 0.75f}),
              after.empty() ? Tensor() : vec(after), mb.empty() ? Tensor() : vec(mb),
              ma.empty() ? Tensor() : vec(ma), vec({0.5f, 2.f}));
  return st;
}

TEST(StepStats, ReadUnpacksEveryPartInOrder) {
  StepStats st = packed({1.f, 2.f, 3.f}, 4.f, {5.f, 6.f}, {7.f, 8.f}, {9.f, 10.f});
  EXPECT_FALSE(st.is_read());
  const uint64_t before = host_syncs();
  st.read();
  EXPECT_EQ(host_syncs() - before, 1u) << "one read for the whole step";
  EXPECT_TRUE(st.is_read());
  EXPECT_EQ(st.losses, (std::vector<float>{1.f, 2.f}));
  EXPECT_EQ(st.total, 3.f);
  EXPECT_EQ(st.grad_norm, 4.f);
  EXPECT_EQ(st.weights, (std::vector<float>{0.25f, 0.75f}));
  EXPECT_EQ(st.losses_after, (std::vector<float>{5.f, 6.f}));
  EXPECT_EQ(st.famo_margin_before, (std::vector<float>{7.f, 8.f}));
  EXPECT_EQ(st.famo_margin_after, (std::vector<float>{9.f, 10.f}));
  EXPECT_EQ(st.grad_cosine, (std::vector<float>{0.5f}));
  EXPECT_EQ(st.grad_norm_ratio, (std::vector<float>{2.f}));
  EXPECT_EQ(st.problem(), "");
  st.read();  // already read: nothing more
  EXPECT_EQ(host_syncs() - before, 1u);
}

TEST(StepStats, ReadStepsReadsAWindowAtOnce) {
  std::vector<StepStats> steps;
  for (int i = 0; i < 5; ++i) steps.push_back(packed({float(i), 1.f, 2.f}, float(10 + i)));
  std::vector<StepStats*> all;
  for (auto& s : steps) all.push_back(&s);
  const uint64_t before = host_syncs();
  read_steps(all);
  EXPECT_EQ(host_syncs() - before, 1u);
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(steps[i].losses[0], float(i));
    EXPECT_EQ(steps[i].grad_norm, float(10 + i));
  }
}

TEST(StepStats, ProblemsAreNamedInTheOrderTheStepMadeThem) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  auto problem = [](StepStats st) {
    st.read();
    return st.problem();
  };
  EXPECT_NE(problem(packed({1.f, nan, 2.f}, nan)).find("objective 'kl' is not finite"),
            std::string::npos);
  EXPECT_NE(problem(packed({1.f, 1.f, 2.f}, 1.f, {1.f, 1.f}, {0.5f, -0.1f}, {1.f, 1.f}))
                .find("famo weighted_loss: objective 'kl' has loss - min_loss + eps = -0.1"),
            std::string::npos);
  EXPECT_NE(problem(packed({1.f, 1.f, 2.f}, inf)).find("gradient norm is not finite"),
            std::string::npos);
  EXPECT_NE(problem(packed({1.f, 1.f, 2.f}, 1.f, {inf, 1.f}, {1.f, 1.f}, {1.f, 1.f}))
                .find("objective 'task' is not finite after the update"),
            std::string::npos);
  EXPECT_NE(problem(packed({1.f, 1.f, 2.f}, 1.f, {1.f, 1.f}, {1.f, 1.f}, {1.f, 0.f}))
                .find("famo update: objective 'kl'"),
            std::string::npos);
  StepStats unread = packed({1.f, 1.f, 2.f}, 1.f);
  EXPECT_FALSE(test::error_of([&] { (void)unread.problem(); }).empty())
      << "problem() of unread values must refuse";
}

// A MoKD step with FAMO and diagnostics, on the CPU: no host read until the values are read (the
// CPU counts the reads a GPU would wait for), and the values equal those of the same step, from
// the same state, read at once by the convenience step().
TEST(StepStats, MoKDStepMakesNoHostReadAndReadsTheSameValuesLater) {
  ModelOverrides o;
  StepStats deferred, at_once;
  for (int run = 0; run < 2; ++run) {
    auto student = create_model("vit_fmnist_micro_distilled", o);
    auto teacher = create_model("resnet_fmnist_small", o);
    DistillConfig cfg;
    cfg.diagnostics_every = 1;
    Distiller d(*student, *teacher, cfg);
    nn::NamedTensors named = student->named_parameters();
    for (auto& p : d.projector_parameters()) named.push_back(p);
    AdamW opt(decay_groups(named, 1e-3f, 0.05f));
    Tensor x = test::randn({4, student->img_size(), student->img_size(), student->in_chans()}, 7);
    Tensor y = Tensor::from_vector_i64({1, 3, 5, 7}, {4});
    MicroBatch m;
    m.images = x;
    m.labels = y;
    d.step(opt, x, y);  // a first step, read: FAMO's weights move from uniform
    if (run == 0) {
      const uint64_t before = host_syncs();
      deferred = d.step(opt, {m}, nullptr);
      EXPECT_EQ(host_syncs() - before, 0u) << "the last host read: " << last_host_sync();
      ASSERT_FALSE(deferred.is_read());
      deferred.read();
      EXPECT_EQ(host_syncs() - before, 1u);
    } else {
      at_once = d.step(opt, x, y);
    }
  }
  EXPECT_EQ(deferred.problem(), "");
  ASSERT_EQ(deferred.losses.size(), 3u);
  EXPECT_EQ(deferred.losses, at_once.losses);
  EXPECT_EQ(deferred.total, at_once.total);
  EXPECT_EQ(deferred.grad_norm, at_once.grad_norm);
  EXPECT_EQ(deferred.weights, at_once.weights);
  EXPECT_EQ(deferred.losses_after, at_once.losses_after);
  EXPECT_EQ(deferred.grad_cosine, at_once.grad_cosine);
  EXPECT_EQ(deferred.grad_norm_ratio, at_once.grad_norm_ratio);
  ASSERT_EQ(deferred.grad_cosine.size(), 3u);
  ASSERT_EQ(deferred.famo_margin_before.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_GT(deferred.famo_margin_before[i], 0.f);
    // The margin is L - L* + eps with L* = 0: the loss itself, to f32 rounding.
    EXPECT_NEAR(deferred.famo_margin_before[i], deferred.losses[i], 1e-6f * deferred.losses[i]);
    EXPECT_GE(deferred.grad_cosine[i], -1.0001f);
    EXPECT_LE(deferred.grad_cosine[i], 1.0001f);
  }
  float wsum = 0.f;
  for (float w : deferred.weights) wsum += w;
  EXPECT_NEAR(wsum, 1.f, 1e-6f);
  EXPECT_NE(deferred.weights[0], deferred.weights[1]) << "FAMO's weights moved after one update";
}

}  // namespace
}  // namespace mokd
