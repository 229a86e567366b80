// ImageFolder: root/<class>/<image>.{jpg,jpeg,png}, decoded lazily (libturbojpeg, libpng) and
// resized.
#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "engine/error.h"
#include "io/augment.h"
#include "io/dataset.h"

namespace mokd::data {

namespace fs = std::filesystem;

namespace {

// The largest image decoded: 2^28 pixels (768 MiB as RGB), far above any dataset image. A header
// that claims more (a corrupt or hostile file) is an error before anything is allocated; it also
// keeps libpng's 32-bit PNG_IMAGE_SIZE from wrapping.
constexpr uint64_t kMaxPixels = uint64_t(1) << 28;

std::vector<uint8_t> decode_png(const std::vector<uint8_t>& bytes, const std::string& source,
                                int64_t* h, int64_t* w) {
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_memory(&img, bytes.data(), bytes.size()))
    MOKD_FAIL(source, ": corrupt PNG (", img.message, ")");
  if (uint64_t(img.width) * img.height > kMaxPixels) {
    const uint64_t iw = img.width, ih = img.height;
    png_image_free(&img);
    MOKD_FAIL(source, ": PNG of ", iw, "x", ih,
              " pixels is larger than the decoder's limit of 2^28 pixels");
  }
  img.format = PNG_FORMAT_RGB;  // gray, palette and alpha are converted (alpha composited on black)
  std::vector<uint8_t> out(PNG_IMAGE_SIZE(img));
  if (!png_image_finish_read(&img, nullptr, out.data(), 0, nullptr)) {
    std::string msg = img.message;
    png_image_free(&img);
    MOKD_FAIL(source, ": corrupt PNG (", msg, ")");
  }
  *h = img.height;
  *w = img.width;
  return out;
}

std::vector<uint8_t> decode_jpeg(const std::vector<uint8_t>& bytes, const std::string& source,
                                 int64_t* h, int64_t* w) {
  tjhandle tj = tjInitDecompress();
  MOKD_CHECK(tj, source, ": cannot create a TurboJPEG decoder (", tjGetErrorStr2(nullptr), ")");
  struct Guard {
    tjhandle t;
    ~Guard() { tjDestroy(t); }
  } guard{tj};
  int width = 0, height = 0, subsamp = 0, colorspace = 0;
  if (tjDecompressHeader3(tj, bytes.data(), static_cast<unsigned long>(bytes.size()), &width,
                          &height, &subsamp, &colorspace) != 0)
    MOKD_FAIL(source, ": corrupt JPEG (", tjGetErrorStr2(tj), ")");
  MOKD_CHECK(width > 0 && height > 0, source, ": corrupt JPEG (size ", width, "x", height, ")");
  MOKD_CHECK(uint64_t(width) * uint64_t(height) <= kMaxPixels, source, ": JPEG of ", width, "x",
             height, " pixels is larger than the decoder's limit of 2^28 pixels");
  std::vector<uint8_t> out(static_cast<size_t>(width) * height * 3);
  // Warnings (e.g. "Premature end of JPEG file") also return -1: a damaged file is an error here.
  if (tjDecompress2(tj, bytes.data(), static_cast<unsigned long>(bytes.size()), out.data(), width,
                    0, height, TJPF_RGB, TJFLAG_ACCURATEDCT) != 0)
    MOKD_FAIL(source, ": corrupt JPEG (", tjGetErrorStr2(tj), ")");
  *h = height;
  *w = width;
  return out;
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
    std::ifstream in(it.path, std::ios::binary);
    MOKD_CHECK(in, it.path, ": cannot open for reading");
    out->bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    MOKD_CHECK(!in.bad(), it.path, ": read error");
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

std::vector<uint8_t> decode_image(const std::vector<uint8_t>& bytes, const std::string& source,
                                  int64_t* height, int64_t* width) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes.size() >= 8 && std::memcmp(bytes.data(), kPng, 8) == 0)
    return decode_png(bytes, source, height, width);
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
    return decode_jpeg(bytes, source, height, width);
  MOKD_FAIL(source, ": not a JPEG or PNG image (",
            bytes.size() < 3 ? "file too short" : "unknown signature", ", ", bytes.size(),
            " bytes)");
}

std::unique_ptr<Dataset> open_image_folder(const std::string& root) {
  return std::make_unique<ImageFolder>(root);
}

}  // namespace mokd::data
