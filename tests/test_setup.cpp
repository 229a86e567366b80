// Checks made from the configuration before training starts: the two splits describe one task
// (mokd/setup.h, check_splits), --config names a file, data.image_size is bounded.
#include <gtest/gtest.h>

#include <CLI/CLI.hpp>
#include <filesystem>

#include "io/dataset.h"
#include "mokd/config.h"
#include "mokd/setup.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

std::unique_ptr<data::InMemoryDataset> split(std::vector<std::string> names, int64_t n,
                                             int64_t hw = 4, int64_t c = 1) {
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = names.empty() ? 0 : i % int64_t(names.size());
  return std::make_unique<data::InMemoryDataset>(hw, hw, c, std::move(names),
                                                 std::vector<uint8_t>(n * hw * hw * c, 7), labels);
}

TrainConfig image_folder_config() {
  TrainConfig cfg;
  cfg.data.dataset = "image_folder";
  cfg.data.dir = "/data/pets";
  return cfg;
}

TEST(Setup, SplitsWithTheSameClassesPass) {
  EXPECT_NO_THROW(
      check_splits(image_folder_config(), *split({"cat", "dog"}, 6), *split({"cat", "dog"}, 4)));
}

TEST(Setup, ClassNamesMustMatchNotJustTheirCount) {
  std::string msg = test::error_of([] {
    check_splits(image_folder_config(), *split({"cat", "dog"}, 6), *split({"cat", "fox"}, 4));
  });
  EXPECT_NE(msg.find("class 1 is 'dog' in the training split (/data/pets/train)"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("'fox' in the test split (/data/pets/val)"), std::string::npos) << msg;
}

TEST(Setup, ImageSizesOfTheSplitsMustMatch) {
  std::string msg = test::error_of([] {
    check_splits(image_folder_config(), *split({"a", "b"}, 4, 8), *split({"a", "b"}, 4, 6));
  });
  EXPECT_NE(msg.find("8x8x1 images, the test split (/data/pets/val) 6x6x1"), std::string::npos)
      << msg;
}

TEST(Setup, OneClassIsRefused) {
  std::string msg = test::error_of(
      [] { check_splits(image_folder_config(), *split({"only"}, 4), *split({"only"}, 4)); });
  EXPECT_NE(msg.find("has 1 class(es); classification needs at least 2"), std::string::npos) << msg;
}

TEST(Setup, AnEmptySplitNamesItsFolder) {
  std::string msg = test::error_of([] {
    check_splits(image_folder_config(), *split({"a", "b"}, 4), *split({"a", "b"}, 0));
  });
  EXPECT_NE(msg.find("the test split (/data/pets/val) holds no images"), std::string::npos) << msg;
}

TEST(Setup, ConfigThatIsAFolderIsRefused) {
  std::string dir = std::filesystem::temp_directory_path() / "mokd_config_dir_test";
  std::filesystem::create_directories(dir);
  CLI::App app;
  ConfigParser parser;
  parser.add_options(app);
  const char* argv[] = {"x", "--config", dir.c_str()};
  app.parse(3, const_cast<char**>(argv));
  std::string msg = test::error_of([&] { parser.resolve(); });
  EXPECT_NE(msg.find("is a folder; --config takes a TOML file"), std::string::npos) << msg;
}

TEST(Setup, ImageSizeIsBounded) {
  std::string msg = test::error_of([] {
    ConfigParser::resolve("", "test.toml", {{"data.image_size", "100000"}});
  });
  EXPECT_NE(msg.find("data.image_size"), std::string::npos) << msg;
  EXPECT_NE(msg.find("in [0, 4096]"), std::string::npos) << msg;
}

}  // namespace
}  // namespace mokd
