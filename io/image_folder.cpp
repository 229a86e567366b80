// ImageFolder: root/<class>/<image>.{jpg,jpeg,png} (any case), decoded lazily (io/decode) and
// resized.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "io/augment.h"
#include "io/dataset.h"
#include "io/decode.h"

namespace mokd::data {

namespace fs = std::filesystem;

namespace {

// The whole file into `bytes` (resized, capacity kept).
void read_file(const std::string& path, std::vector<uint8_t>& bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  MOKD_CHECK(in, path, ": cannot open for reading");
  const std::streamoff size = in.tellg();
  MOKD_CHECK(size >= 0, path, ": cannot read its size");
  bytes.resize(static_cast<size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), size);
  MOKD_CHECK(in.gcount() == size, path, ": read ", in.gcount(), " of ", size, " bytes");
}

std::string lower_ext(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return e;
}

class ImageFolder final : public Dataset {
 public:
  ImageFolder(const std::string& root, int64_t size) : size_(size) {
    MOKD_CHECK(size > 0, "ImageFolder: image_size must be > 0, got ", size);
    MOKD_CHECK(fs::is_directory(root), "ImageFolder: directory ", root,
               " not found; expected root/<class>/*.jpg|*.jpeg|*.png");
    std::vector<fs::path> classes;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory()) classes.push_back(e.path());
    std::sort(classes.begin(), classes.end());
    for (const fs::path& cdir : classes) {
      std::vector<std::string> files;
      for (const auto& e : fs::directory_iterator(cdir)) {
        if (!e.is_regular_file()) continue;
        std::string ext = lower_ext(e.path());
        if (ext == ".jpg" || ext == ".jpeg" || ext == ".png") files.push_back(e.path().string());
      }
      if (files.empty()) continue;  // as torchvision: a class folder without images is skipped
      std::sort(files.begin(), files.end());
      const int64_t label = static_cast<int64_t>(names_.size());
      names_.push_back(cdir.filename().string());
      for (std::string& f : files) items_.push_back({std::move(f), label});
    }
    MOKD_CHECK(!items_.empty(), "ImageFolder: no images under ", root,
               "; expected root/<class>/*.jpg|*.jpeg|*.png");
  }
  int64_t size() const override { return static_cast<int64_t>(items_.size()); }
  int64_t height() const override { return size_; }
  int64_t width() const override { return size_; }
  int64_t channels() const override { return 3; }
  int64_t num_classes() const override { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& class_names() const override { return names_; }

  void read(int64_t index, uint8_t* hwc_out, int64_t* label) const override {
    MOKD_CHECK(index >= 0 && index < size(), "ImageFolder: index ", index, " outside [0, ", size(),
               ")");
    const Item& it = items_[static_cast<size_t>(index)];
    // Per-thread buffers: a worker reuses its file and image memory from one sample to the next.
    thread_local std::vector<uint8_t> bytes;
    thread_local Image rgb;
    read_file(it.path, bytes);
    decode_image(bytes.data(), bytes.size(), it.path, rgb);
    const int64_t h = rgb.height, w = rgb.width;
    if (h == size_ && w == size_)
      std::memcpy(hwc_out, rgb.data(), rgb.pixels.size());
    else
      resize_bilinear(rgb.data(), h, w, 3, Box{0, 0, h, w}, size_, size_, hwc_out);
    if (label) *label = it.label;
  }

 private:
  struct Item {
    std::string path;
    int64_t label;
  };
  int64_t size_;
  std::vector<std::string> names_;
  std::vector<Item> items_;
};

}  // namespace

std::unique_ptr<Dataset> open_image_folder(const std::string& root, int64_t image_size) {
  return std::make_unique<ImageFolder>(root, image_size);
}

}  // namespace mokd::data
