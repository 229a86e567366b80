// ImageFolder: root/<class>/<image>.{jpg,jpeg,png} (any case); samples are the files' bytes, decoded
// by the loader (io/decode).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "engine/error.h"
#include "io/dataset.h"

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
  explicit ImageFolder(const std::string& root) : root_(root) {
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
  int64_t height() const override { return 0; }  // files of any size
  int64_t width() const override { return 0; }
  int64_t channels() const override { return 3; }
  int64_t num_classes() const override { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string location() const override { return root_; }
  std::string source(int64_t index) const override {
    return index >= 0 && index < size() ? items_[static_cast<size_t>(index)].path
                                        : root_ + "[" + std::to_string(index) + "]";
  }

  void fetch(int64_t index, RawSample* out) const override {
    MOKD_CHECK(index >= 0 && index < size(), "ImageFolder ", root_, ": index ", index,
               " outside [0, ", size(), ")");
    const Item& it = items_[static_cast<size_t>(index)];
    read_file(it.path, out->bytes);
    out->encoded = true;
    out->height = out->width = out->channels = 0;
    out->label = it.label;
  }

 private:
  struct Item {
    std::string path;
    int64_t label;
  };
  std::string root_;
  std::vector<std::string> names_;
  std::vector<Item> items_;
};

}  // namespace

std::unique_ptr<Dataset> open_image_folder(const std::string& root) {
  return std::make_unique<ImageFolder>(root);
}

}  // namespace mokd::data
