// Starting a model from a checkpoint (mokd/setup.h, load_init; model.teacher_init,
// model.student_init, model.reset_head): the backbone loads exactly, a reset head stays fresh for
// the new class count, and every misfit is refused naming the tensors, both shapes and the way on.
#include <gtest/gtest.h>

#include <filesystem>

#include "io/dataset.h"
#include "models/registry.h"
#include "mokd/config.h"
#include "mokd/setup.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

// A model off its initial state: weights from seed, BN statistics and counters moved by one
// training forward.
std::unique_ptr<Model> trained_model(const std::string& name, int64_t classes, uint64_t seed) {
  auto m = create_model(name, ModelOverrides{.num_classes = classes, .seed = seed});
  NoGrad ng;
  m->forward(test::randn({2, m->img_size(), m->img_size(), m->in_chans()}, seed + 100));
  return m;
}

// Every entry of `actual` equals `expected`'s bit for bit (integers as integers).
void expect_same_entry(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(shape_str(actual.shape()), shape_str(expected.shape())) << what;
  if (expected.dtype() == DType::I64)
    EXPECT_EQ(actual.to_vector_i64(), expected.to_vector_i64()) << what;
  else
    EXPECT_EQ(actual.to_vector(), expected.to_vector()) << what;
}

TEST(FineTune, ResetHeadLoadsTheBackboneExactly) {
  test::TempDir dir;
  for (const char* name :
       {"resnet_fmnist_small", "regnety_fmnist_small", "vit_fmnist_micro_distilled"}) {
    auto source = trained_model(name, 7, 1);
    const std::string file = dir.path(std::string(name) + ".safetensors");
    io::save_safetensors(file, source->state_dict());
    const io::TensorMap want = source->state_dict();

    auto target = create_model(name, ModelOverrides{.num_classes = 10, .seed = 2});
    const io::TensorMap fresh = target->state_dict();
    load_init(*target, "model.teacher_init", file, true);
    const io::TensorMap got = target->state_dict();
    const std::set<std::string> head = target->head_names();
    ASSERT_FALSE(head.empty()) << name;
    ASSERT_EQ(got.size(), want.size()) << name;
    for (const auto& [k, v] : got) {
      if (head.count(k)) {
        expect_same_entry(v, fresh.at(k), std::string(name) + " head " + k + " (kept fresh)");
        EXPECT_EQ(v.size(0), 10) << name << " " << k;
        EXPECT_EQ(want.at(k).size(0), 7) << name << " " << k;
      } else {
        expect_same_entry(v, want.at(k), std::string(name) + " " + k);
      }
    }
    EXPECT_EQ(target->num_classes(), 10) << name;
    // The head is the model's own: a forward gives 10 logits.
    target->eval();
    NoGrad ng;
    Tensor y = target->forward(test::randn({2, 28, 28, 1}, 3));
    EXPECT_EQ(shape_str(y.shape()), "[2, 10]") << name;
  }
  // The head names are timm's.
  EXPECT_EQ(create_model("resnet_fmnist_small")->head_names(),
            (std::set<std::string>{"fc.weight", "fc.bias"}));
  EXPECT_EQ(create_model("regnety_fmnist_small")->head_names(),
            (std::set<std::string>{"head.fc.weight", "head.fc.bias"}));
  EXPECT_EQ(create_model("vit_fmnist_micro")->head_names(),
            (std::set<std::string>{"head.weight", "head.bias"}));
  EXPECT_EQ(
      create_model("vit_fmnist_micro_distilled")->head_names(),
      (std::set<std::string>{"head.weight", "head.bias", "head_dist.weight", "head_dist.bias"}));
}

TEST(FineTune, AHeadOfAnotherClassCountNeedsResetHead) {
  test::TempDir dir;
  const std::string file = dir.path("resnet.safetensors");
  io::save_safetensors(file, trained_model("resnet_fmnist_small", 7, 1)->state_dict());
  auto target = create_model("resnet_fmnist_small", ModelOverrides{.num_classes = 10, .seed = 2});
  const io::TensorMap before = target->state_dict();
  test::expect_error([&] { load_init(*target, "model.teacher_init", file, false); },
                     {"model.teacher_init", file, "resnet_fmnist_small", "10 classes",
                      "wrong shape (2)", "fc.weight: file [7, 128] vs model [10, 128]",
                      "fc.bias: file [7] vs model [10]", "model.reset_head=true"});
  for (const auto& [k, v] : target->state_dict())
    expect_same_entry(v, before.at(k), k + " (a refused load changed it)");
  // The same class count loads without the reset, head included.
  auto same = create_model("resnet_fmnist_small", ModelOverrides{.num_classes = 7, .seed = 3});
  load_init(*same, "model.teacher_init", file, false);
  const io::TensorMap want = io::load_safetensors(file);
  for (const auto& [k, v] : same->state_dict()) expect_same_entry(v, want.at(k), k);
}

TEST(FineTune, ABackboneMismatchIsRefusedNamingTheTensors) {
  test::TempDir dir;
  io::TensorMap sd = trained_model("resnet_fmnist_small", 7, 1)->state_dict();
  sd.erase("layer1.0.conv1.weight");
  sd["layer9.0.conv1.weight"] = Tensor::zeros({4});
  sd["bn1.running_mean"] = Tensor::zeros({3});
  const std::string file = dir.path("bad.safetensors");
  io::save_safetensors(file, sd);
  for (bool reset : {true, false}) {
    auto target = create_model("resnet_fmnist_small", ModelOverrides{.num_classes = 10});
    const std::string msg =
        test::error_of([&] { load_init(*target, "model.student_init", file, reset); });
    for (const char* part :
         {"model.student_init", "missing (1)", "layer1.0.conv1.weight", "unexpected (1)",
          "layer9.0.conv1.weight", "bn1.running_mean: file [3] vs model [64]"})
      EXPECT_NE(msg.find(part), std::string::npos)
          << "reset " << reset << ": lacks '" << part << "':\n"
          << msg;
    // With the head reset, the head is no longer part of the complaint.
    EXPECT_EQ(msg.find("fc.weight") == std::string::npos, reset) << msg;
  }
  // Another architecture's file: its tensors are named too.
  const std::string vit = dir.path("vit.safetensors");
  io::save_safetensors(vit, create_model("vit_fmnist_micro")->state_dict());
  auto tiny = create_model("vit_fmnist_tiny");
  test::expect_error([&] { load_init(*tiny, "model.teacher_init", vit, true); },
                     {"model.teacher_init", "vit_fmnist_tiny",
                      "pos_embed: file [1, 50, 64] vs "
                      "model [1, 50, 96]",
                      "missing (", "blocks.5.norm1.weight"});
  test::expect_error(
      [&] { load_init(*tiny, "model.teacher_init", dir.path("absent.safetensors"), true); },
      {"model.teacher_init", "absent.safetensors", "does not exist"});
}

// The configuration path: `mokd_train teacher` with --model.teacher_init and
// --model.reset_head=true builds its model from the file (Fashion-MNIST, 10 classes).
TEST(FineTune, TeacherRunStartsFromTeacherInit) {
  if (!std::filesystem::exists(std::string(data::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed";
  test::TempDir dir;
  const std::string file = dir.path("init.safetensors");
  io::save_safetensors(file, trained_model("resnet_fmnist_small", 5, 1)->state_dict());
  const io::TensorMap want = io::load_safetensors(file);
  std::map<std::string, std::string> over = {{"model.teacher", "resnet_fmnist_small"},
                                             {"model.teacher_init", file},
                                             {"model.reset_head", "true"},
                                             {"run.device", "cpu"},
                                             {"run.out_dir", dir.path("run")},
                                             {"data.train_limit", "64"},
                                             {"data.eval_limit", "32"},
                                             {"data.batch_size", "32"},
                                             {"data.workers", "0"},
                                             {"optim.steps", "1"}};
  TrainConfig cfg = ConfigParser::resolve("", "test.toml", over);
  EXPECT_EQ(cfg.model.teacher_init, file);
  EXPECT_TRUE(cfg.model.reset_head);
  auto t = build_training(cfg, TrainMode::Teacher);
  EXPECT_EQ(t->model->num_classes(), 10);
  for (const auto& [k, v] : t->model->state_dict()) {
    if (t->model->head_names().count(k))
      EXPECT_EQ(v.size(0), 10) << k;
    else
      expect_same_entry(v, want.at(k), k);
  }
  over["model.reset_head"] = "false";
  cfg = ConfigParser::resolve("", "test.toml", over);
  test::expect_error([&] { build_training(cfg, TrainMode::Teacher); },
                     {"model.teacher_init", "fc.weight: file [5, 128] vs model [10, 128]",
                      "model.reset_head=true"});
  EXPECT_FALSE(TrainConfig{}.model.reset_head);  // off unless asked for
}

}  // namespace
}  // namespace mokd
