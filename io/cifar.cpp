// CIFAR-10 / CIFAR-100 binary batches (https://www.cs.toronto.edu/~kriz/cifar.html) into memory,
// HWC.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/error.h"
#include "io/dataset.h"

namespace mokd::data {

namespace {

constexpr int64_t kSide = 32, kPlane = kSide * kSide, kImage = 3 * kPlane;

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  MOKD_CHECK(in, path, ": cannot open for reading");
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> read_names(const std::string& path, int64_t n) {
  std::vector<std::string> names;
  std::ifstream in(path);
  std::string line;
  while (in && std::getline(in, line)) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (!line.empty()) names.push_back(line);
  }
  if (static_cast<int64_t>(names.size()) != n) {
    names.clear();
    for (int64_t k = 0; k < n; ++k) names.push_back(std::to_string(k));
  }
  return names;
}

}  // namespace

std::unique_ptr<InMemoryDataset> load_cifar(const std::string& dir, int num_classes,
                                            const std::string& split) {
  MOKD_CHECK(num_classes == 10 || num_classes == 100, "CIFAR: num_classes must be 10 or 100, got ",
             num_classes);
  MOKD_CHECK(split == "train" || split == "test", "CIFAR-", num_classes, ": unknown split '", split,
             "' (expected \"train\" or \"test\")");
  const bool c10 = num_classes == 10;
  const std::string what = c10 ? "CIFAR-10" : "CIFAR-100";
  const std::string hint =
      c10 ? " (the binary version, cifar-10-binary.tar.gz: data_batch_1..5.bin, test_batch.bin)"
          : " (the binary version, cifar-100-binary.tar.gz: train.bin, test.bin)";
  MOKD_CHECK(std::filesystem::is_directory(dir), what, ": directory ", dir,
             " not found; expected the batches", hint);
  std::vector<std::string> files;
  if (c10) {
    if (split == "train")
      for (int b = 1; b <= 5; ++b) files.push_back("data_batch_" + std::to_string(b) + ".bin");
    else
      files.push_back("test_batch.bin");
  } else {
    files.push_back(split + ".bin");
  }
  // The archives unpack into a subfolder; accept either it or its parent.
  std::string base = dir;
  const std::string sub = dir + (c10 ? "/cifar-10-batches-bin" : "/cifar-100-binary");
  if (!std::filesystem::exists(dir + "/" + files[0]) &&
      std::filesystem::exists(sub + "/" + files[0]))
    base = sub;

  const int64_t label_bytes = c10 ? 1 : 2;  // CIFAR-100: coarse then fine
  const int64_t record = label_bytes + kImage;
  std::vector<uint8_t> pixels;
  std::vector<int64_t> labels;
  for (const std::string& f : files) {
    const std::string path = base + "/" + f;
    MOKD_CHECK(std::filesystem::is_regular_file(path), what, ": ", path,
               " not found; expected the batches", hint);
    std::vector<uint8_t> bytes = read_all(path);
    const int64_t size = static_cast<int64_t>(bytes.size());
    MOKD_CHECK(size > 0 && size % record == 0, path, ": ", size, " bytes is not a whole number of ",
               record, "-byte ", what, " records (", size == 0 ? "empty file" : "truncated record",
               " at byte offset ", size / record * record, ")");
    const int64_t n = size / record;
    const size_t at = pixels.size();
    pixels.resize(at + static_cast<size_t>(n * kImage));
    for (int64_t r = 0; r < n; ++r) {
      const uint8_t* rec = bytes.data() + r * record;
      const int64_t label = rec[label_bytes - 1];
      MOKD_CHECK(label < num_classes, path, ": label ", label, " at byte offset ",
                 r * record + label_bytes - 1, " (record ", r, ") is >= ", num_classes);
      labels.push_back(label);
      // Planes R, G, B of 32x32 -> HWC.
      uint8_t* out = pixels.data() + at + static_cast<size_t>(r * kImage);
      const uint8_t* planes = rec + label_bytes;
      for (int64_t p = 0; p < kPlane; ++p)
        for (int64_t ch = 0; ch < 3; ++ch) out[p * 3 + ch] = planes[ch * kPlane + p];
    }
  }
  std::vector<std::string> names =
      read_names(base + (c10 ? "/batches.meta.txt" : "/fine_label_names.txt"), num_classes);
  return std::make_unique<InMemoryDataset>(kSide, kSide, 3, std::move(names), std::move(pixels),
                                           std::move(labels), base);
}

}  // namespace mokd::data
