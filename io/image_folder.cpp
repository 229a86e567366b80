// ImageFolder: root/<class>/<image>.{jpg,jpeg,png} (any case); samples are the files' bytes,
// decoded by the loader (io/decode). Listing a large split (ImageNet: 1.28M files) at every start
// is slow, so the listing is kept in an index file (io/index_cache.h) and each class folder is
// listed again only when its modification time moved.
//
// Index body, one record per line:
//   root <absolute root>
//   class <mtime ns, -1 = unconfirmed> <number of image files> <class folder name>
//   <image file name>            (that many lines, sorted)
// Every class folder is recorded, those without images too, so that an image added to one later
// is noticed. Labels are the positions of the classes with images, in name order.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "engine/error.h"
#include "io/dataset.h"
#include "io/index_cache.h"

namespace mokd::data {

namespace fs = std::filesystem;
namespace ic = index_cache;

namespace {

constexpr const char* kMagic = "mokd image-folder index 1";

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

bool is_image(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(),
                 [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
  return e == ".jpg" || e == ".jpeg" || e == ".png";
}

struct ClassDir {
  std::string name;
  int64_t mtime = -1;  // as recorded in the index
  std::vector<std::string> files;
};

// The class folders of an index body; false (and *why) when it is not well formed. `root` is
// filled with the root it was written for.
bool parse_index(std::string_view body, std::string* root, std::map<std::string, ClassDir>* out,
                 std::string* why) {
  size_t pos = 0;
  std::string_view line;
  if (!ic::next_line(body, &pos, &line) || line.substr(0, 5) != "root ") {
    *why = "no root line";
    return false;
  }
  *root = std::string(line.substr(5));
  int64_t line_no = 2;
  while (ic::next_line(body, &pos, &line)) {
    ClassDir c;
    int64_t n = 0;
    const size_t a = line.find(' ', 6), b = a == std::string_view::npos ? a : line.find(' ', a + 1);
    if (line.substr(0, 6) != "class " || b == std::string_view::npos ||
        !ic::parse_i64(line.substr(6, a - 6), &c.mtime) ||
        !ic::parse_i64(line.substr(a + 1, b - a - 1), &n) || n < 0 || b + 1 >= line.size()) {
      *why = "line " + std::to_string(line_no) + " is not 'class <mtime> <count> <name>'";
      return false;
    }
    c.name = std::string(line.substr(b + 1));
    if (c.name.find('/') != std::string::npos) {
      *why = "line " + std::to_string(line_no) + " names a class folder with a '/'";
      return false;
    }
    c.files.reserve(static_cast<size_t>(std::min<int64_t>(n, 1 << 20)));
    for (int64_t i = 0; i < n; ++i) {
      if (!ic::next_line(body, &pos, &line) || line.empty()) {
        *why = "class '" + c.name + "' lists fewer than its " + std::to_string(n) + " files";
        return false;
      }
      if (line.find('/') != std::string_view::npos || !is_image(fs::path(line))) {
        *why = "class '" + c.name + "' lists '" + std::string(line) + "', not an image file name";
        return false;
      }
      c.files.emplace_back(line);
    }
    line_no += n + 1;
    if (!out->emplace(c.name, std::move(c)).second) {
      *why = "a class is listed twice";
      return false;
    }
  }
  return true;
}

std::string index_body(const std::string& abs_root, const std::vector<ClassDir>& classes) {
  std::string s = "root " + abs_root + "\n";
  for (const ClassDir& c : classes) {
    s += "class " + std::to_string(c.mtime) + " " + std::to_string(c.files.size()) + " " + c.name +
         "\n";
    for (const std::string& f : c.files) (s += f) += '\n';
  }
  return s;
}

// Image file names in a class folder, sorted.
std::vector<std::string> list_images(const fs::path& dir) {
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && is_image(e.path())) files.push_back(e.path().filename().string());
  std::sort(files.begin(), files.end());
  return files;
}

std::string plural(int64_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

class ImageFolder final : public Dataset {
 public:
  ImageFolder(const std::string& root, const ImageFolderOptions& opt) : root_(root) {
    MOKD_CHECK(fs::is_directory(root), "ImageFolder: directory ", root,
               " not found; expected root/<class>/*.jpg|*.jpeg|*.png");
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(root))
      if (e.is_directory()) names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());

    IndexReport report;
    std::vector<ClassDir> classes =
        opt.index_cache ? listing_with_index(names, &report) : listing(names, nullptr, &report);
    if (opt.report) *opt.report = report;
    for (ClassDir& c : classes) {
      if (c.files.empty()) continue;  // as torchvision: a class folder without images is skipped
      const int64_t label = static_cast<int64_t>(names_.size());
      names_.push_back(c.name);
      dirs_.push_back((fs::path(root_) / c.name).string() + "/");
      for (std::string& f : c.files) items_.push_back({std::move(f), label});
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
    return index >= 0 && index < size() ? path_of(items_[static_cast<size_t>(index)])
                                        : root_ + "[" + std::to_string(index) + "]";
  }

  void fetch(int64_t index, RawSample* out) const override {
    MOKD_CHECK(index >= 0 && index < size(), "ImageFolder ", root_, ": index ", index,
               " outside [0, ", size(), ")");
    const Item& it = items_[static_cast<size_t>(index)];
    read_file(path_of(it), out->bytes);
    out->encoded = true;
    out->height = out->width = out->channels = 0;
    out->label = it.label;
  }

 private:
  struct Item {
    std::string file;  // name within its class folder
    int64_t label;
  };
  std::string path_of(const Item& it) const {
    return dirs_[static_cast<size_t>(it.label)] + it.file;
  }

  // The class folders `names`, each taken from `known` (entries are moved out) when its
  // modification time matches the recorded one, else listed.
  std::vector<ClassDir> listing(const std::vector<std::string>& names,
                                std::map<std::string, ClassDir>* known, IndexReport* report) {
    std::vector<ClassDir> out;
    out.reserve(names.size());
    for (const std::string& name : names) {
      const fs::path dir = fs::path(root_) / name;
      const int64_t checked_at = ic::now_ns();
      const int64_t mtime = ic::mtime_ns(dir.string());
      auto it = known ? known->find(name) : std::map<std::string, ClassDir>::iterator{};
      if (known && it != known->end() && it->second.mtime >= 0 && it->second.mtime == mtime) {
        out.push_back(std::move(it->second));
        ++report->reused;
        continue;
      }
      ClassDir c;
      c.name = name;
      c.mtime = ic::settled(mtime, checked_at);
      c.files = list_images(dir);
      out.push_back(std::move(c));
      ++report->listed;
    }
    return out;
  }

  // How many class folders changed since the index `known` was written (a recorded time that
  // moved, a folder added or gone), and how many it recorded as unconfirmed.
  int64_t changes(const std::vector<std::string>& names,
                  const std::map<std::string, ClassDir>& known, int64_t* unconfirmed) const {
    int64_t changed = 0, present = 0;
    *unconfirmed = 0;
    for (const std::string& name : names) {
      auto it = known.find(name);
      if (it == known.end()) {
        ++changed;
        continue;
      }
      ++present;
      if (it->second.mtime < 0)
        ++*unconfirmed;
      else if (it->second.mtime != ic::mtime_ns((fs::path(root_) / name).string()))
        ++changed;
    }
    return changed + static_cast<int64_t>(known.size()) - present;
  }

  std::vector<ClassDir> listing_with_index(const std::vector<std::string>& names,
                                           IndexReport* report) {
    const std::string abs_root = fs::absolute(root_).lexically_normal().string();
    const std::string beside = (fs::path(root_) / ".mokd_index").string();
    const std::string fallback = ic::user_cache_path("image-folder", abs_root);
    std::map<std::string, ClassDir> known;  // the first readable index: its unchanged folders
    bool have_known = false;
    std::string problem;  // why an index found is not used as it is
    for (const std::string& path : {beside, fallback}) {
      if (path.empty()) continue;
      std::string body, why, root;
      std::map<std::string, ClassDir> entries;
      const ic::ReadStatus st = ic::read(path, kMagic, &body, &why);
      if (st == ic::ReadStatus::kMissing) continue;
      if (st == ic::ReadStatus::kOk && parse_index(body, &root, &entries, &why) &&
          path == fallback && root != abs_root)
        why = "it was written for " + root;
      if (!why.empty()) {
        if (problem.empty()) problem = "index " + path + " is damaged (" + why + ")";
        continue;
      }
      int64_t unconfirmed = 0;
      const int64_t changed = changes(names, entries, &unconfirmed);
      if (changed == 0 && unconfirmed == 0) {  // valid as it is
        std::vector<ClassDir> out = listing(names, &entries, report);
        report->path = path;
        return out;
      }
      if (have_known) continue;
      known = std::move(entries);
      have_known = true;
      if (changed > 0 && problem.empty())
        problem = "index " + path + " is out of date (" + plural(changed, "class folder") +
                  " changed, added or removed)";
    }
    std::vector<ClassDir> out = listing(names, have_known ? &known : nullptr, report);
    return finish(abs_root, beside, fallback, std::move(out), problem, report);
  }

  // Writes the index of `classes` and says on stderr why an index found was not used.
  std::vector<ClassDir> finish(const std::string& abs_root, const std::string& beside,
                               const std::string& fallback, std::vector<ClassDir> classes,
                               const std::string& problem, IndexReport* report) {
    const bool writable = std::none_of(classes.begin(), classes.end(), [](const ClassDir& c) {
      return c.name.find('\n') != std::string::npos ||
             std::any_of(c.files.begin(), c.files.end(),
                         [](const std::string& f) { return f.find('\n') != std::string::npos; });
    });
    std::string why = "a file name holds a line break";
    const std::string written =
        writable ? ic::store(beside, fallback, kMagic, index_body(abs_root, classes), &why) : "";
    report->path = written;
    report->written = !written.empty();
    if (!problem.empty())
      std::fprintf(stderr, "ImageFolder %s: %s; listed %lld of %zu class folders again\n",
                   root_.c_str(), problem.c_str(), static_cast<long long>(report->listed),
                   classes.size());
    if (written.empty())
      std::fprintf(stderr, "ImageFolder %s: listing not saved as an index (%s)\n", root_.c_str(),
                   why.c_str());
    return classes;
  }

  std::string root_;
  std::vector<std::string> names_;
  std::vector<std::string> dirs_;  // per label: the class folder's path with a trailing '/'
  std::vector<Item> items_;
};

}  // namespace

std::unique_ptr<Dataset> open_image_folder(const std::string& root,
                                           const ImageFolderOptions& options) {
  return std::make_unique<ImageFolder>(root, options);
}

}  // namespace mokd::data
