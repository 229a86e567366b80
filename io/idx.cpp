// IDX files (MNIST, Fashion-MNIST), gzipped or raw, read through zlib; errors name file and offset.
#include <zlib.h>

#include <filesystem>
#include <string>
#include <vector>

#include "engine/error.h"
#include "io/dataset.h"

namespace mokd::data {

namespace {

// zlib prefixes its messages with the path, which ours already names.
std::string strip(const char* msg, const std::string& path) {
  std::string m = msg ? msg : "";
  if (m.rfind(path + ": ", 0) == 0) m = m.substr(path.size() + 2);
  return m;
}

// The whole file; gzread passes non-gzip files through unchanged.
std::vector<uint8_t> read_maybe_gz(const std::string& path) {
  MOKD_CHECK(std::filesystem::is_regular_file(path), path,
             ": file not found (expected an IDX file, gzipped or raw)");
  gzFile f = gzopen(path.c_str(), "rb");
  MOKD_CHECK(f, path, ": cannot open for reading");
  std::vector<uint8_t> out;
  const size_t chunk = size_t(1) << 20;
  for (;;) {
    size_t at = out.size();
    out.resize(at + chunk);
    int got = gzread(f, out.data() + at, static_cast<unsigned>(chunk));
    if (got < 0) {
      int code = 0;
      std::string msg = strip(gzerror(f, &code), path);
      long coff = gzoffset(f);
      gzclose(f);
      MOKD_FAIL(path, ": gzip error (", msg, ") at byte offset ", at,
                " of the decompressed data (compressed offset ", coff, ")");
    }
    out.resize(at + static_cast<size_t>(got));
    if (got == 0) break;
  }
  int code = 0;
  std::string msg = strip(gzerror(f, &code), path);
  int rc = gzclose(f);
  // A stream cut short reads as EOF with Z_BUF_ERROR ("unexpected end of file").
  MOKD_CHECK(code == Z_OK && rc == Z_OK, path, ": gzip error (",
             code != Z_OK ? msg : std::string("truncated stream"), ") at byte offset ", out.size(),
             " of the decompressed data");
  return out;
}

struct Idx {
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;  // the values (the header removed)
};

uint32_t be32(const uint8_t* p) {
  return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | uint32_t(p[3]);
}

Idx read_idx(const std::string& path) {
  std::vector<uint8_t> bytes = read_maybe_gz(path);
  MOKD_CHECK(bytes.size() >= 4, path, ": truncated IDX header: ", bytes.size(),
             " bytes, the 4-byte magic ends at byte offset 4");
  MOKD_CHECK(bytes[0] == 0 && bytes[1] == 0, path, ": bad IDX magic at byte offset 0: bytes ",
             int(bytes[0]), " ", int(bytes[1]), ", expected 0 0");
  MOKD_CHECK(bytes[2] == 0x08, path, ": IDX element type 0x", std::hex, int(bytes[2]), std::dec,
             " at byte offset 2 is not supported (expected 0x08, unsigned byte)");
  const int nd = bytes[3];
  MOKD_CHECK(nd >= 1 && nd <= 4, path, ": IDX rank ", nd, " at byte offset 3 (expected 1 to 4)");
  const size_t header = 4 + 4 * static_cast<size_t>(nd);
  MOKD_CHECK(bytes.size() >= header, path, ": truncated IDX header: ", bytes.size(), " bytes, the ",
             nd, " dimensions end at byte offset ", header);
  Idx idx;
  uint64_t count = 1;
  for (int d = 0; d < nd; ++d) {
    uint32_t v = be32(bytes.data() + 4 + 4 * d);
    idx.dims.push_back(v);
    // Checked before multiplying: 2^40 * a 32-bit dim could wrap a 64-bit count (to 0, say).
    MOKD_CHECK(v == 0 || count <= (uint64_t(1) << 40) / v, path, ": IDX dimension ", d, " = ", v,
               " at byte offset ", 4 + 4 * d, " makes the array implausibly large");
    count *= v;
  }
  const size_t have = bytes.size() - header;
  if (have != count) {
    std::string dims;
    for (size_t d = 0; d < idx.dims.size(); ++d)
      dims += (d ? " x " : "") + std::to_string(idx.dims[d]);
    MOKD_FAIL(path, ": IDX header declares ", dims, " = ", count, " bytes of data but ", have,
              " bytes follow the ", header, "-byte header (",
              have < count ? "truncated" : "trailing bytes", " at byte offset ",
              header + std::min<uint64_t>(have, count), ")");
  }
  bytes.erase(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(header));
  idx.data = std::move(bytes);
  return idx;
}

}  // namespace

std::unique_ptr<InMemoryDataset> load_idx(const std::string& images_path,
                                          const std::string& labels_path, int64_t num_classes,
                                          std::vector<std::string> class_names) {
  Idx images = read_idx(images_path);
  Idx labels = read_idx(labels_path);
  MOKD_CHECK(images.dims.size() == 3 || images.dims.size() == 4, images_path,
             ": IDX images of rank ", images.dims.size(), " (expected [N, H, W] or [N, H, W, C])");
  MOKD_CHECK(labels.dims.size() == 1, labels_path, ": IDX labels of rank ", labels.dims.size(),
             " (expected [N])");
  const int64_t n = images.dims[0], h = images.dims[1], w = images.dims[2];
  const int64_t c = images.dims.size() == 4 ? images.dims[3] : 1;
  MOKD_CHECK(h > 0 && w > 0 && c > 0, images_path, ": empty image size ", h, "x", w, "x", c);
  MOKD_CHECK(labels.dims[0] == n, labels_path, ": ", labels.dims[0],
             " labels (count at byte offset 4) but ", images_path, " has ", n, " images");
  if (num_classes <= 0) {
    num_classes = class_names.empty() ? 0 : static_cast<int64_t>(class_names.size());
    if (num_classes == 0)
      for (uint8_t v : labels.data) num_classes = std::max<int64_t>(num_classes, int64_t(v) + 1);
  }
  std::vector<int64_t> lab(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    int64_t v = labels.data[static_cast<size_t>(i)];
    MOKD_CHECK(v < num_classes, labels_path, ": label ", v, " at byte offset ", 8 + i, " (sample ",
               i, ") is >= the number of classes ", num_classes);
    lab[static_cast<size_t>(i)] = v;
  }
  if (class_names.empty())
    for (int64_t k = 0; k < num_classes; ++k) class_names.push_back(std::to_string(k));
  MOKD_CHECK(static_cast<int64_t>(class_names.size()) == num_classes,
             "load_idx: ", class_names.size(), " class names for ", num_classes, " classes");
  return std::make_unique<InMemoryDataset>(h, w, c, std::move(class_names), std::move(images.data),
                                           std::move(lab), images_path);
}

std::unique_ptr<InMemoryDataset> load_fashion_mnist(const std::string& dir,
                                                    const std::string& split) {
  MOKD_CHECK(split == "train" || split == "test", "Fashion-MNIST: unknown split '", split,
             "' (expected \"train\" or \"test\")");
  const std::string hint = "; install the Debian package dataset-fashion-mnist or set data.dir";
  MOKD_CHECK(std::filesystem::is_directory(dir), "Fashion-MNIST: directory ", dir, " not found",
             hint);
  const std::string prefix = split == "train" ? "train" : "t10k";
  auto find = [&](const std::string& stem) {
    std::string gz = dir + "/" + stem + ".gz", raw = dir + "/" + stem;
    if (std::filesystem::is_regular_file(gz)) return gz;
    if (std::filesystem::is_regular_file(raw)) return raw;
    MOKD_FAIL("Fashion-MNIST: ", gz, " not found", hint);
  };
  std::string images = find(prefix + "-images-idx3-ubyte");
  std::string labels = find(prefix + "-labels-idx1-ubyte");
  return load_idx(images, labels, 10,
                  {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"});
}

}  // namespace mokd::data
