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
#include "io/dataset.h"
#include "io/encode_png.h"
#include "io/safetensors.h"
#include "models/registry.h"
#include "mokd/config.h"
#include "mokd/dry_run.h"
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
    const std::string text = describe_run(cfg, TrainMode::Distill);
    expect_describes(
        text, file,
        {"260 samples, 2 classes", "input: 224x224x3", "teacher regnety_160", cfg.model.student,
         "method " + cfg.distill.method, "16 steps per epoch, 4800 steps in total (300 epochs)",
         "lr x 512 / batch = 0.032", "device memory"});
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
