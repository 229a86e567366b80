// mokd_train's data tools on a tiny image folder written here (JPEGs of several sizes):
// bench-data times every stage and the loader; preview-data writes a grid whose eval halves are
// the eval transform's output and a raw file whose tensors are what the training loader gives for
// the same positions. Bad options are errors naming the option.
#include <turbojpeg.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/decode.h"
#include "io/loader.h"
#include "io/transform.h"
#include "mokd/bench_data.h"
#include "mokd/config.h"
#include "mokd/preview_data.h"
#include "mokd/setup.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

namespace fs = std::filesystem;
using test::expect_error;

using test::TempDir;

void write_jpeg(const std::string& path, int h, int w, uint32_t seed) {
  std::vector<uint8_t> rgb(static_cast<size_t>(h * w * 3));
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        rgb[static_cast<size_t>((y * w + x) * 3 + c)] =
            static_cast<uint8_t>((x * (3 + c) + y * (5 + seed) + 40 * c + 17 * seed) & 0xff);
  tjhandle tj = tjInitCompress();
  ASSERT_TRUE(tj);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_420, 90, 0), 0)
      << tjGetErrorStr2(tj);
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(buf), static_cast<std::streamsize>(size));
  tjFree(buf);
  tjDestroy(tj);
}

// root/{train,val}/<class>/*.jpg: 2 classes of 3 (train) and 1 (val) images, in several sizes.
void write_folder(const std::string& root) {
  const int sizes[][2] = {{40, 56}, {64, 36}, {48, 48}, {30, 70}};
  uint32_t seed = 0;
  for (const char* cls : {"ant", "bee"}) {
    for (int i = 0; i < 3; ++i, ++seed)
      write_jpeg(root + "/train/" + cls + "/" + std::to_string(i) + ".jpg", sizes[seed % 4][0],
                 sizes[seed % 4][1], seed);
    write_jpeg(root + "/val/" + cls + "/0.jpg", 44, 52, seed++);
  }
}

// DeiT's training transform at 32 px on the folder.
TrainConfig deit_config(const std::string& root, std::map<std::string, std::string> extra = {}) {
  std::map<std::string, std::string> keys = {{"data.dataset", "image_folder"},
                                             {"data.dir", root},
                                             {"data.image_size", "32"},
                                             {"data.random_resized_crop", "true"},
                                             {"data.hflip", "true"},
                                             {"data.auto_augment", "rand-m9-mstd0.5-inc1"},
                                             {"data.reprob", "0.25"},
                                             {"data.batch_size", "4"},
                                             {"data.workers", "2"},
                                             {"run.seed", "7"}};
  for (auto& [k, v] : extra) keys[k] = v;
  return ConfigParser::resolve("", "test", keys);
}

// ---------------------------------------------------------------- bench-data

TEST(BenchData, TimesEveryStageAtEveryThreadCountAndTheLoader) {
  TempDir t;
  write_folder(t.root());
  const TrainConfig cfg = deit_config(t.root());
  auto train = open_dataset(cfg, true);
  BenchDataOptions o;
  o.threads = {1, 2};
  o.seconds = 0.05;
  o.samples = 4;
  const BenchDataResult r = bench_data(cfg, *train, o);
  EXPECT_EQ(r.samples, 4);
  EXPECT_EQ(r.split_size, 6);
  EXPECT_TRUE(r.encoded);
  EXPECT_EQ(r.out_height, 32);
  const std::vector<std::string> stages = {"decode", "decode+rrc", "train", "eval"};
  ASSERT_EQ(r.rows.size(), 8u);
  for (size_t i = 0; i < r.rows.size(); ++i) {
    const BenchDataRow& row = r.rows[i];
    EXPECT_EQ(row.stage, stages[i / 2]);
    EXPECT_EQ(row.threads, i % 2 ? 2 : 1);
    EXPECT_GE(row.images, row.threads) << row.stage;  // each thread finishes one sample at least
    EXPECT_GT(row.seconds, 0) << row.stage;
    EXPECT_GT(row.images_per_s, 0) << row.stage;
    EXPECT_DOUBLE_EQ(row.per_thread, row.images_per_s / row.threads);
    EXPECT_GT(row.scaling, 0) << row.stage;
    if (row.threads == 1) EXPECT_DOUBLE_EQ(row.scaling, 1.0);
  }
  EXPECT_EQ(r.workers, 2);
  EXPECT_EQ(r.batch_size, 4);
  EXPECT_GE(r.batches, 1);
  EXPECT_GT(r.batches_per_s, 0);
  EXPECT_DOUBLE_EQ(r.loader_images_per_s, r.batches_per_s * 4);  // drop_last: full batches only

  const std::string text = format_bench_data(r);
  for (const char* part :
       {"read into memory first", "RandAugment rand-m9-mstd0.5-inc1",
        "random erasing drawn (p 0.25", "to uint8", "crop_pct 0.875", "batches/s", "images/s"})
    EXPECT_NE(text.find(part), std::string::npos) << part << " missing from\n" << text;
  for (const std::string& s : stages)
    for (int th : {1, 2}) {
      char row[64];
      std::snprintf(row, sizeof row, "\n%-12s %7d ", s.c_str(), th);
      EXPECT_NE(text.find(row), std::string::npos) << "no row '" << row << "' in\n" << text;
    }
  const nlohmann::json j = bench_data_json(r);
  ASSERT_EQ(j["stages"].size(), 8u);
  EXPECT_EQ(j["stages"][2]["stage"], "decode+rrc");
  EXPECT_GT(j["loader"]["images_per_s"].get<double>(), 0);
}

TEST(BenchData, SplitHeldDecodedHasNoDecodeStage) {
  std::vector<uint8_t> pixels(6 * 10 * 12);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 7);
  data::InMemoryDataset ds(10, 12, 1, {"a", "b"}, pixels, {0, 1, 0, 1, 1, 0}, "six grey images");
  const TrainConfig cfg = ConfigParser::resolve(
      "", "test", {{"data.batch_size", "2"}, {"data.workers", "0"}, {"data.hflip", "true"}});
  BenchDataOptions o;
  o.threads = {2};
  o.seconds = 0.02;
  const BenchDataResult r = bench_data(cfg, ds, o);
  EXPECT_FALSE(r.encoded);
  EXPECT_EQ(r.samples, 6);
  ASSERT_EQ(r.rows.size(), 3u);
  EXPECT_EQ(r.rows[0].stage, "decode+rrc");
  EXPECT_EQ(r.rows[1].stage, "train");
  EXPECT_EQ(r.rows[2].stage, "eval");
  for (const BenchDataRow& row : r.rows) {
    EXPECT_GT(row.images_per_s, 0) << row.stage;
    EXPECT_DOUBLE_EQ(row.scaling, 1.0) << "the smallest count timed is the base";
  }
  EXPECT_EQ(r.out_height, 10);
  EXPECT_EQ(r.out_width, 12);
  EXPECT_NE(format_bench_data(r).find("held decoded in memory"), std::string::npos);
}

TEST(BenchData, ThreadCountsAndBadOptions) {
  EXPECT_EQ(default_thread_counts(1), (std::vector<int>{1}));
  EXPECT_EQ(default_thread_counts(2), (std::vector<int>{1, 2}));
  EXPECT_EQ(default_thread_counts(6), (std::vector<int>{1, 2, 4, 6}));
  EXPECT_EQ(default_thread_counts(16), (std::vector<int>{1, 2, 4, 8, 16}));
  EXPECT_EQ(parse_thread_counts("1,3,8", "--threads"), (std::vector<int>{1, 3, 8}));
  for (const char* bad : {"", "0", "1,x", "1,", ",2", "-1", "2000", "1,,2", "1.5"})
    expect_error([&] { parse_thread_counts(bad, "--threads"); },
                 {"--threads", "thread counts", std::string("'") + bad + "'"});

  data::InMemoryDataset ds(4, 4, 1, {"a"}, std::vector<uint8_t>(16), {0});
  const TrainConfig cfg = ConfigParser::resolve("", "test", {});
  BenchDataOptions o;
  o.seconds = 0;
  expect_error([&] { bench_data(cfg, ds, o); }, {"--seconds", "(0, 3600]"});
  o.seconds = 0.01;
  o.samples = 0;
  expect_error([&] { bench_data(cfg, ds, o); }, {"--samples", ">= 1"});
  o.samples = 1;
  o.threads = {0};
  expect_error([&] { bench_data(cfg, ds, o); }, {"--threads"});
  // An image folder needs data.image_size: the transform says so.
  TempDir t;
  write_folder(t.root());
  const TrainConfig no_size = deit_config(t.root(), {{"data.image_size", "0"}});
  expect_error([&] { open_dataset(no_size, true); }, {"data.image_size"});
}

// ---------------------------------------------------------------- preview-data

struct RawEntry {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Every entry of a safetensors file, read directly (mokd's reader refuses U8).
std::map<std::string, RawEntry> read_raw(const std::string& path, nlohmann::json* metadata) {
  std::ifstream f(path, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  EXPECT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  const nlohmann::json h = nlohmann::json::parse(bytes.substr(8, n));
  std::map<std::string, RawEntry> out;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") {
      *metadata = *it;
      continue;
    }
    const auto off = (*it)["data_offsets"].get<std::vector<uint64_t>>();
    out[it.key()] =
        RawEntry{(*it)["dtype"].get<std::string>(), (*it)["shape"].get<std::vector<int64_t>>(),
                 bytes.substr(8 + n + off[0], off[1] - off[0])};
  }
  return out;
}

data::Image decode_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(f)), {});
  return data::decode_image(bytes.data(), bytes.size(), path);
}

// The h x w x 3 window at (x, y) of an RGB image.
std::vector<uint8_t> window(const data::Image& img, int64_t x, int64_t y, int64_t h, int64_t w) {
  std::vector<uint8_t> out;
  for (int64_t r = 0; r < h; ++r)
    out.insert(out.end(), img.row(y + r) + 3 * x, img.row(y + r) + 3 * (x + w));
  return out;
}

TEST(PreviewData, GridHoldsTrainAndEvalImagesAndTheRawFileTheLoadersRows) {
  TempDir t;
  write_folder(t.root());
  const TrainConfig cfg = deit_config(t.root());
  auto train = open_dataset(cfg, true);
  PreviewOptions o;
  o.out = t.path("preview.png");
  o.count = 5;
  o.raw_dir = t.root();
  const PreviewResult r = preview_data(cfg, *train, o);
  const int64_t s = 32, n = 5, columns = 3, rows = 2;
  EXPECT_EQ(r.columns, columns);
  EXPECT_EQ(r.rows, rows);
  EXPECT_EQ(r.width, columns * (2 * s + kPreviewSeparator) + (columns - 1) * kPreviewGap);
  EXPECT_EQ(r.height, rows * s + (rows - 1) * kPreviewGap);
  ASSERT_EQ(r.indices.size(), 5u);

  const data::Image png = decode_file(o.out);
  ASSERT_EQ(png.height, r.height);
  ASSERT_EQ(png.width, r.width);
  nlohmann::json meta;
  const auto raw = read_raw(r.raw, &meta);
  ASSERT_EQ(raw.size(), 5u);
  for (const char* u8 : {"train_u8", "eval_u8"}) {
    EXPECT_EQ(raw.at(u8).dtype, "U8");
    EXPECT_EQ(raw.at(u8).shape, (std::vector<int64_t>{n, s, s, 3}));
  }
  EXPECT_EQ(raw.at("train").dtype, "F32");
  EXPECT_EQ(raw.at("train").shape, (std::vector<int64_t>{n, s, s, 3}));
  EXPECT_EQ(raw.at("labels").dtype, "I64");
  EXPECT_EQ(raw.at("indices").shape, (std::vector<int64_t>{n}));
  std::vector<int64_t> indices(n), labels(n);
  std::memcpy(indices.data(), raw.at("indices").bytes.data(), n * 8);
  std::memcpy(labels.data(), raw.at("labels").bytes.data(), n * 8);
  EXPECT_EQ(indices, r.indices);
  EXPECT_EQ(meta["seed"], "7");
  EXPECT_EQ(nlohmann::json::parse(meta["sources"].get<std::string>()).size(), 5u);

  // Eval halves: the eval transform of the samples shown; train halves: train_u8.
  const data::LoaderOptions eo = loader_options(cfg, *train, false, 0);
  const data::SampleTransform et(eo.transform, 0, 0, 3);
  const size_t per = static_cast<size_t>(s * s * 3);
  for (int64_t i = 0; i < n; ++i) {
    data::RawSample sample;
    train->fetch(indices[i], &sample);
    EXPECT_EQ(labels[i], sample.label);
    data::Rng rng(data::data_key(0, 0, data::DataPurpose::Sample, 0));
    data::Image expected;
    et.apply(sample, train->source(indices[i]), rng, expected);
    const int64_t x = (i % columns) * (2 * s + kPreviewSeparator + kPreviewGap);
    const int64_t y = (i / columns) * (s + kPreviewGap);
    EXPECT_EQ(window(png, x + s + kPreviewSeparator, y, s, s), expected.pixels) << "eval " << i;
    EXPECT_EQ(raw.at("eval_u8").bytes.substr(per * i, per),
              std::string(expected.pixels.begin(), expected.pixels.end()));
    const std::string train_u8 = raw.at("train_u8").bytes.substr(per * i, per);
    EXPECT_EQ(window(png, x, y, s, s), std::vector<uint8_t>(train_u8.begin(), train_u8.end()))
        << "train " << i;
    EXPECT_EQ(window(png, x + s, y, s, kPreviewSeparator),
              std::vector<uint8_t>(s * kPreviewSeparator * 3, kPreviewBackground));
  }
  // The unused sixth cell is background.
  EXPECT_EQ(window(png, 2 * (2 * s + kPreviewSeparator + kPreviewGap), s + kPreviewGap, s, s),
            std::vector<uint8_t>(per, kPreviewBackground));

  // `train` is what the training loader gives for positions 0..4 of epoch 0 (its workers, its
  // order, its random streams), mixup aside.
  data::LoaderOptions lo = loader_options(cfg, *train, true, cfg.run.seed);
  lo.batch_size = n;
  data::Loader loader(*train, lo);
  data::Batch batch;
  ASSERT_TRUE(loader.next(batch));
  const Tensor images = batch.images();
  EXPECT_EQ(raw.at("train").bytes,
            std::string(reinterpret_cast<const char*>(images.data<float>()), images.nbytes()));
  EXPECT_EQ(std::vector<int64_t>(batch.labels.data<int64_t>(), batch.labels.data<int64_t>() + n),
            labels);
}

TEST(PreviewData, WithoutErasingTheF32RowsAreTheNormalisedTrainImages) {
  TempDir t;
  write_folder(t.root());
  const TrainConfig cfg = deit_config(t.root(), {{"data.reprob", "0"}});
  auto train = open_dataset(cfg, true);
  PreviewOptions o;
  o.out = t.path("p.png");
  o.count = 3;
  o.raw_dir = t.root();
  const PreviewResult r = preview_data(cfg, *train, o);
  nlohmann::json meta;
  const auto raw = read_raw(r.raw, &meta);
  const auto mean =
      nlohmann::json::parse(meta["mean"].get<std::string>()).get<std::vector<float>>();
  const auto std = nlohmann::json::parse(meta["std"].get<std::string>()).get<std::vector<float>>();
  ASSERT_EQ(mean.size(), 3u);
  const std::string& u8 = raw.at("train_u8").bytes;
  std::vector<float> f(u8.size());
  std::memcpy(f.data(), raw.at("train").bytes.data(), f.size() * 4);
  double worst = 0;
  for (size_t i = 0; i < u8.size(); ++i) {
    const double v = (static_cast<uint8_t>(u8[i]) / 255.0 - mean[i % 3]) / std[i % 3];
    worst = std::max(worst, std::abs(v - f[i]));
  }
  EXPECT_LT(worst, 1e-5);
}

TEST(PreviewData, GreySplitIsWrittenAsRgb) {
  TempDir t;
  std::vector<uint8_t> pixels(3 * 6 * 6);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 13);
  data::InMemoryDataset ds(6, 6, 1, {"a", "b"}, pixels, {0, 1, 1});
  const TrainConfig cfg = ConfigParser::resolve("", "test", {});
  PreviewOptions o;
  o.out = t.path("grey.png");
  o.count = 2;
  const PreviewResult r = preview_data(cfg, ds, o);
  EXPECT_TRUE(r.raw.empty());
  const data::Image png = decode_file(o.out);
  EXPECT_EQ(png.width, 2 * (2 * 6 + kPreviewSeparator) + kPreviewGap);
  EXPECT_EQ(png.height, 6);
  // The eval transform of a fixed-size split without data.image_size is the identity.
  const int64_t i = r.indices[1];
  const int64_t x = 2 * 6 + kPreviewSeparator + kPreviewGap + 6 + kPreviewSeparator;
  for (int64_t y = 0; y < 6; ++y)
    for (int64_t c = 0; c < 3; ++c)
      EXPECT_EQ(png.row(y)[3 * (x + 2) + c], pixels[i * 36 + y * 6 + 2]) << y;
}

TEST(PreviewData, BadOptionsAreNamed) {
  TempDir t;
  data::InMemoryDataset ds(4, 4, 1, {"a"}, std::vector<uint8_t>(32), {0, 0});
  const TrainConfig cfg = ConfigParser::resolve("", "test", {});
  PreviewOptions o;
  expect_error([&] { preview_data(cfg, ds, o); }, {"--out"});
  o.out = t.path("p.png");
  o.count = 0;
  expect_error([&] { preview_data(cfg, ds, o); }, {"--count", "[1, 1024]"});
  o.count = 3;
  expect_error([&] { preview_data(cfg, ds, o); }, {"--count 3", "exceeds", "2 samples"});
  o.count = 1;
  o.raw_dir = t.path("missing");
  expect_error([&] { preview_data(cfg, ds, o); }, {"--raw", "missing", "not a folder"});
  o.raw_dir = "";
  o.out = t.root();
  expect_error([&] { preview_data(cfg, ds, o); }, {t.root(), "directory"});
  o.out = t.path("no/such/folder/p.png");
  expect_error([&] { preview_data(cfg, ds, o); }, {"p.png", "No such file"});
  EXPECT_FALSE(fs::exists(t.path("p.png")));
}

}  // namespace
}  // namespace mokd
