// FAMO can be checked from a run's log alone: metrics.jsonl holds, per step, the losses before the
// update, the re-forward's losses after it and the weights z the step used. An independent
// implementation of FAMO's update (double precision, torch.optim.Adam's coupled weight decay, as
// docs/method.md states it) replays the weights from the logged losses and must find the logged
// weights at every step.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "io/dataset.h"
#include "io/safetensors.h"
#include "models/registry.h"
#include "mokd/trainer.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

namespace fs = std::filesystem;

// FAMO's weight logits, their Adam moments and the step count.
struct ReplayedFamo {
  std::vector<double> w, m, v;
  int64_t t = 0;
  explicit ReplayedFamo(size_t k) : w(k, 0.0), m(k, 0.0), v(k, 0.0) {}

  std::vector<double> weights() const {
    double mx = *std::max_element(w.begin(), w.end()), s = 0;
    std::vector<double> z(w.size());
    for (size_t i = 0; i < w.size(); ++i) s += z[i] = std::exp(w[i] - mx);
    for (double& x : z) x /= s;
    return z;
  }

  // delta_i = log(L_i + eps) - log(L'_i + eps) (L* = 0); g = J_softmax^T delta; Adam with L2.
  void update(const std::vector<double>& before, const std::vector<double>& after) {
    const double eps = 1e-8, lr = 0.025, wd = 0.01, b1 = 0.9, b2 = 0.999, adam_eps = 1e-8;
    const std::vector<double> z = weights();
    std::vector<double> delta(w.size());
    double zd = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      delta[i] = std::log(before[i] + eps) - std::log(after[i] + eps);
      zd += z[i] * delta[i];
    }
    ++t;
    const double c1 = 1 - std::pow(b1, double(t)), c2 = 1 - std::pow(b2, double(t));
    for (size_t i = 0; i < w.size(); ++i) {
      const double g = z[i] * (delta[i] - zd) + wd * w[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      w[i] -= lr / c1 * m[i] / (std::sqrt(v[i]) / std::sqrt(c2) + adam_eps);
    }
  }
};

TEST(FamoReplay, LoggedWeightsFollowFromTheLoggedLosses) {
  if (!fs::exists(std::string(data::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)";
  test::TempDir dir;
  TrainConfig c;
  c.run.out_dir = dir.path("run");
  c.run.device = "cpu";
  c.run.seed = 11;
  c.data.train_limit = 256;
  c.data.eval_limit = 64;
  c.data.batch_size = 16;
  c.data.workers = 1;
  c.model.student = "vit_fmnist_micro";
  c.model.teacher = "resnet_fmnist_small";
  c.optim.steps = 40;
  c.optim.lr = 2e-3;
  c.log.log_every = 10;
  ModelOverrides o;
  o.seed = 5;
  c.model.teacher_weights = dir.path("teacher.safetensors");
  io::save_safetensors(c.model.teacher_weights, create_model(c.model.teacher, o)->state_dict(),
                       {{"model", c.model.teacher}});
  train(c, TrainMode::Distill);

  std::ifstream f(c.run.out_dir + "/metrics.jsonl");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(f, line);) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j.value("kind", "") == "step") rows.push_back(j);
  }
  ASSERT_EQ(rows.size(), 40u);
  std::vector<std::string> names;
  for (auto it = rows[0].begin(); it != rows[0].end(); ++it)
    if (it.key().rfind("loss_after.", 0) == 0) names.push_back(it.key().substr(11));
  ASSERT_EQ(names.size(), 3u) << "task, kl and feat, each with its loss after the update";

  ReplayedFamo famo(names.size());
  double moved = 0;
  for (size_t t = 0; t < rows.size(); ++t) {
    const nlohmann::json& r = rows[t];
    ASSERT_EQ(r.at("step").get<double>(), double(t + 1));
    const std::vector<double> z = famo.weights();
    std::vector<double> before, after;
    for (size_t i = 0; i < names.size(); ++i) {
      EXPECT_NEAR(r.at("weight." + names[i]).get<double>(), z[i], 1e-5)
          << "step " << t + 1 << " objective " << names[i];
      moved = std::max(moved, std::fabs(z[i] - 1.0 / names.size()));
      before.push_back(r.at("loss." + names[i]).get<double>());
      after.push_back(r.at("loss_after." + names[i]).get<double>());
    }
    famo.update(before, after);
  }
  EXPECT_GT(moved, 0.01) << "the weights must move for the replay to show anything";
}

}  // namespace
}  // namespace mokd
