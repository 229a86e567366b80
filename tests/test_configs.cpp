// Every run in configs/ resolves and builds: `--dry-run` (describe_run) passes on each file. The
// ImageNet runs are built against a small synthetic image folder (ImageNet is not on the test
// machines) with a randomly initialised RegNetY-160 teacher file and a batch that fits the folder;
// the Fashion-MNIST runs against the installed dataset. A dry run names what is missing.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "engine/precision.h"
#include "engine/storage.h"
#include "io/dataset.h"
#include "io/encode_png.h"
#include "io/loader.h"
#include "io/safetensors.h"
#include "models/registry.h"
#include "mokd/config.h"
#include "mokd/dry_run.h"
#include "mokd/setup.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

namespace fs = std::filesystem;

const std::string kConfigs = std::string(MOKD_TEST_DATA) + "/../../configs";

std::string slurp(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Two classes of 130 small PNGs in train/ (timm's repeated-augmentation sampler rounds an epoch
// down to a multiple of 256 samples) and 4 each in val/.
void write_folder(const std::string& dir) {
  for (const char* split : {"train", "val"})
    for (int k = 0; k < 2; ++k) {
      const std::string d = dir + "/" + split + "/c" + std::to_string(k);
      fs::create_directories(d);
      const int count = std::string(split) == "train" ? 130 : 4;
      for (int i = 0; i < count; ++i) {
        data::Image img(20 + i % 7, 26 - i % 5, 3);
        for (size_t p = 0; p < img.pixels.size(); ++p)
          img.pixels[p] = static_cast<uint8_t>((p * 13 + i * 7 + k * 50) % 256);
        const std::vector<uint8_t> png = data::encode_png(img, "test image");
        std::ofstream(d + "/" + std::to_string(i) + ".png", std::ios::binary)
            .write(reinterpret_cast<const char*>(png.data()),
                   static_cast<std::streamsize>(png.size()));
      }
    }
}

std::string write_teacher(const std::string& path, const std::string& name, int64_t classes) {
  ModelOverrides o;
  o.num_classes = classes;
  o.seed = 3;
  io::save_safetensors(path, create_model(name, o)->state_dict(), {{"model", name}});
  return path;
}

std::vector<std::string> config_files(const std::string& sub) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(kConfigs + "/" + sub))
    if (e.path().extension() == ".toml") out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

void expect_describes(const std::string& text, const std::string& file,
                      const std::vector<std::string>& parts) {
  for (const std::string& p : parts)
    EXPECT_NE(text.find(p), std::string::npos) << file << ": no '" << p << "' in\n" << text;
}

// A dry run builds the run, which applies its process-wide settings (the ImageNet runs' bf16
// matmuls): restored after each test so that later tests run as they expect.
class Configs : public ::testing::Test {
 protected:
  void TearDown() override { set_matmul_precision(saved_); }
  MatmulPrecision saved_ = matmul_precision();
};

TEST_F(Configs, EveryImageNetRunPassesTheDryRun) {
  const std::vector<std::string> files = config_files("imagenet");
  ASSERT_EQ(files.size(), 8u) << "DeiT-Ti and DeiT-S, each with none, deit-hard, vkd and mokd";
  test::TempDir dir;
  write_folder(dir.path("imagenet"));
  const std::string teacher = write_teacher(dir.path("regnety_160.safetensors"), "regnety_160", 2);
  for (const std::string& file : files) {
    const std::map<std::string, std::string> overrides = {{"data.dir", dir.path("imagenet")},
                                                          {"model.teacher_weights", teacher},
                                                          {"data.batch_size", "16"},
                                                          {"data.workers", "1"},
                                                          {"run.device", "cpu"},
                                                          {"run.out_dir", dir.path("run")}};
    const TrainConfig cfg = ConfigParser::resolve(slurp(file), file, overrides);
    EXPECT_EQ(cfg.optim.epochs, 300) << file;
    EXPECT_EQ(cfg.data.auto_augment, "rand-m9-mstd0.5-inc1") << file;
    // The activation estimate runs a few one- and two-sample steps of the 224 px models: on the
    // two MoKD runs only (it is checked against a measured step below).
    const bool estimate = cfg.distill.method == "mokd";
    const std::string text = describe_run(cfg, TrainMode::Distill, estimate);
    expect_describes(
        text, file,
        {"260 samples, 2 classes", "input: 224x224x3", "teacher regnety_160", cfg.model.student,
         "method " + cfg.distill.method, "16 steps per epoch, 4800 steps in total (300 epochs)",
         "lr x 512 / batch = 0.032", "device memory"});
    if (estimate)
      expect_describes(text, file,
                       {"device memory during a step, estimated: peak", "at 16 samples per "});
    EXPECT_FALSE(fs::exists(dir.path("run"))) << "a dry run writes nothing";
  }
}

TEST_F(Configs, EveryFashionMnistRunPassesTheDryRun) {
  if (!fs::exists(std::string(data::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)";
  const std::vector<std::string> files = config_files("fashion_mnist");
  ASSERT_EQ(files.size(), 5u) << "the teacher and none, kd, vkd, mokd";
  test::TempDir dir;
  const std::string teacher =
      write_teacher(dir.path("teacher.safetensors"), "resnet_fmnist_small", 10);
  for (const std::string& file : files) {
    const bool is_teacher = fs::path(file).filename() == "teacher.toml";
    const TrainConfig cfg = ConfigParser::resolve(slurp(file), file,
                                                  {{"model.teacher_weights", teacher},
                                                   {"run.device", "cpu"},
                                                   {"run.out_dir", dir.path("r")}});
    const std::string text =
        describe_run(cfg, is_teacher ? TrainMode::Teacher : TrainMode::Distill);
    expect_describes(
        text, file,
        {"60000 samples, 10 classes", "468 steps per epoch, 14040 steps in total (30 epochs)",
         is_teacher ? "model resnet_fmnist_small" : "student vit_fmnist_micro"});
  }
}

// The dry run's estimate of a step's peak memory (from traced steps of 2 and 3 samples) equals the
// peak of a real step at the run's batch, measured by the allocator, in both modes and precisions.
TEST_F(Configs, TheActivationEstimateEqualsTheMeasuredPeakOfAStep) {
  if (!fs::exists(std::string(data::kFashionMnistDir) + "/t10k-labels-idx1-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)";
  test::TempDir dir;
  const std::string teacher =
      write_teacher(dir.path("teacher.safetensors"), "resnet_fmnist_small", 10);
  struct Case {
    const char* file;
    TrainMode mode;
    const char* precision;
    const char* batch;
  };
  for (const Case& c : {Case{"mokd.toml", TrainMode::Distill, "f32", "48"},
                        Case{"mokd.toml", TrainMode::Distill, "bf16", "40"},
                        Case{"vkd.toml", TrainMode::Distill, "f32", "33"},
                        Case{"teacher.toml", TrainMode::Teacher, "f32", "64"},
                        Case{"mokd.toml", TrainMode::Distill, "f32", "2"}}) {
    const std::string file = kConfigs + "/fashion_mnist/" + c.file;
    const TrainConfig cfg = ConfigParser::resolve(slurp(file), file,
                                                  {{"model.teacher_weights", teacher},
                                                   {"run.device", "cpu"},
                                                   {"run.precision", c.precision},
                                                   {"data.batch_size", c.batch},
                                                   {"data.workers", "0"},
                                                   {"run.out_dir", dir.path("r")}});
    const int64_t batch = cfg.data.batch_size;
    double estimated = 0, resident = 0;
    {
      const std::unique_ptr<Training> t = build_training(cfg, c.mode);
      const ActivationEstimate e = estimate_activations(*t, batch);
      EXPECT_TRUE(e.exact_trace) << c.file << " " << c.precision;
      estimated = e.step_peak_bytes;
      resident = e.resident_bytes;
    }
    const std::unique_ptr<Training> t = build_training(cfg, c.mode);
    data::Batch b;
    ASSERT_TRUE(t->loader->next(b));
    ASSERT_EQ(b.size(), batch);
    t->step->step(b);  // the one-time allocations
    Allocator& alloc = allocator_for(t->device);
    // (The normalisation table is the loader's, shared by its batches.)
    const size_t held = b.pixels.nbytes() + b.labels.nbytes() +
                        (b.soft_targets.defined() ? b.soft_targets.nbytes() : 0);
    EXPECT_EQ(static_cast<double>(alloc.bytes_in_use() - held), resident)
        << "resident between steps, besides the batch: " << c.file << " " << c.precision;
    alloc.reset_peak();
    t->step->step(b);
    const double measured = static_cast<double>(alloc.peak_bytes());
    if (batch > 8) EXPECT_GT(measured, 2 * resident) << "activations dominate: " << c.file;
    EXPECT_NEAR(estimated, measured, 1e-3 * measured) << c.file << " " << c.precision;
  }
}

TEST_F(Configs, ADryRunNamesWhatIsMissing) {
  const std::string file = kConfigs + "/imagenet/deit_tiny-regnety_160-mokd.toml";
  test::TempDir dir;
  write_folder(dir.path("imagenet"));
  test::expect_error(
      [&] {
        describe_run(ConfigParser::resolve(slurp(file), file, {{"run.device", "cpu"}}),
                     TrainMode::Distill);
      },
      {"data.dir"});
  test::expect_error(
      [&] {
        describe_run(ConfigParser::resolve(slurp(file), file,
                                           {{"run.device", "cpu"},
                                            {"data.dir", dir.path("imagenet")},
                                            {"data.batch_size", "16"},
                                            {"model.teacher_weights", dir.path("absent.st")}}),
                     TrainMode::Distill);
      },
      {"absent.st"});
}

}  // namespace
}  // namespace mokd
