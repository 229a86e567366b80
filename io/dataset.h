// Image classification datasets: the Dataset interface, an in-memory split (IDX, CIFAR), a lazily
// decoded ImageFolder and WebDataset-style tar shards. Images are HWC uint8; labels are class
// indices in [0, num_classes).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace mokd::data {

struct Sample {
  std::vector<uint8_t> pixels;  // HWC
  int64_t label = 0;
};

// What a dataset hands out for one sample: the encoded file (JPEG/PNG bytes, decoded by the
// transform, io/decode.h) or, for splits held decoded in memory, the HWC pixels.
struct RawSample {
  std::vector<uint8_t> bytes;
  bool encoded = true;
  int64_t height = 0, width = 0, channels = 0;  // of the pixels, when !encoded
  int64_t label = 0;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  // The shape every sample has (splits held decoded), or 0 where samples are encoded files of
  // any size (ImageFolder, tar shards; those decode to channels() == 3, RGB).
  virtual int64_t height() const = 0;
  virtual int64_t width() const = 0;
  virtual int64_t channels() const = 0;
  virtual int64_t num_classes() const = 0;
  virtual const std::vector<std::string>& class_names() const = 0;
  // Sample `index` as it is stored. Thread-safe; throws mokd::Error naming the source file when it
  // cannot be read.
  virtual void fetch(int64_t index, RawSample* out) const = 0;
  // Where sample `index` comes from, for messages: a file path, "shard.tar:member", "dir[index]".
  virtual std::string source(int64_t index) const = 0;
  // The folder or file the split was read from, for messages.
  virtual std::string location() const = 0;
  bool fixed_size() const { return height() > 0 && width() > 0; }

  // Fixed-size splits only: writes sample `index` (HWC, height*width*channels bytes) and its
  // label.
  void read(int64_t index, uint8_t* hwc_out, int64_t* label) const;
  int64_t sample_bytes() const { return height() * width() * channels(); }
  Sample get(int64_t index) const;
};

// A split held decoded in memory.
class InMemoryDataset final : public Dataset {
 public:
  InMemoryDataset(int64_t height, int64_t width, int64_t channels,
                  std::vector<std::string> class_names, std::vector<uint8_t> pixels,
                  std::vector<int64_t> labels, std::string location = "an in-memory split");
  int64_t size() const override { return static_cast<int64_t>(labels_.size()); }
  int64_t height() const override { return h_; }
  int64_t width() const override { return w_; }
  int64_t channels() const override { return c_; }
  int64_t num_classes() const override { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& class_names() const override { return names_; }
  void fetch(int64_t index, RawSample* out) const override;
  std::string source(int64_t index) const override;
  std::string location() const override { return location_; }

  const std::vector<uint8_t>& pixels() const { return pixels_; }
  const std::vector<int64_t>& labels() const { return labels_; }

 private:
  int64_t h_, w_, c_;
  std::vector<std::string> names_;
  std::vector<uint8_t> pixels_;
  std::vector<int64_t> labels_;
  std::string location_;
};

// IDX files (http://yann.lecun.com/exdb/mnist/), gzipped or raw: images u8 [N, H, W] (or
// [N, H, W, C]) and labels u8 [N]. num_classes <= 0: max label + 1. Errors name the file and the
// byte offset of the problem.
std::unique_ptr<InMemoryDataset> load_idx(const std::string& images_path,
                                          const std::string& labels_path, int64_t num_classes = 0,
                                          std::vector<std::string> class_names = {});

// Fashion-MNIST split "train" or "test" from dir
// ({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]).
std::unique_ptr<InMemoryDataset> load_fashion_mnist(const std::string& dir,
                                                    const std::string& split);
// Where the Debian package dataset-fashion-mnist installs the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// CIFAR-10 (data_batch_1..5.bin / test_batch.bin) or CIFAR-100 (train.bin / test.bin, fine labels)
// binary batches in dir or in its cifar-10-batches-bin / cifar-100-binary subfolder.
std::unique_ptr<InMemoryDataset> load_cifar(const std::string& dir, int num_classes,
                                            const std::string& split);

// How a split of many files found its listing (ImageFolder: class folders; tar shards: shards).
struct IndexReport {
  std::string path;      // the index file read or written; "" when none
  int64_t reused = 0;    // folders or shards taken from the index
  int64_t listed = 0;    // folders listed or shards read anew
  bool written = false;  // the index file was (re)written
};

struct ImageFolderOptions {
  // Keep the listing in an index file, <root>/.mokd_index (or, when root cannot be written,
  // $XDG_CACHE_HOME/mokd or ~/.cache/mokd, keyed by root's absolute path), and reuse a class
  // folder's file list while the folder's modification time is unchanged (adding, removing or
  // renaming a file changes it; a time of the last two seconds is not trusted yet, so that folder
  // is listed again at the next open). A stale or damaged index is rebuilt with a one-line note
  // on stderr; an index that cannot be written is skipped, with a note.
  bool index_cache = true;
  IndexReport* report = nullptr;  // when set, receives how the listing was obtained
};

// root/<class>/*.{jpg,jpeg,png} (extensions in any case, e.g. ImageNet's .JPEG): classes sorted by
// name (as torchvision and timm), files sorted by name within a class; a class folder without
// images is skipped. fetch() returns the file's bytes; the loader decodes them to RGB as Pillow
// does (io/decode.h).
std::unique_ptr<Dataset> open_image_folder(const std::string& root,
                                           const ImageFolderOptions& options = {});

struct TarShardsOptions {
  // Keep the offsets in an index file beside the shards, .mokd_tar_index-<hash of the spec's file
  // name part> (or under the user's cache folder, as ImageFolder's), and reuse a shard's entries
  // while its size and modification time are unchanged; stale or damaged: rebuilt with a note.
  bool index_cache = true;
  IndexReport* report = nullptr;
};

// Tar shards in the WebDataset layout. spec: a folder (every *.tar in it, sorted by name), one
// .tar file, or a file name with brace groups expanded in order: numeric ranges keeping the
// width of zero-padded bounds ("train-{000000..000146}.tar") and lists ("{a,b}"), the first group
// varying slowest. A sample is a run of consecutive regular-file members sharing a key (the name
// up to the first '.' of its last path component, as WebDataset): its image key.jpg / key.jpeg /
// key.png (extension in any case) and its label key.cls (the class index as decimal text); other
// members are ignored. Reads ustar, GNU (long names) and pax (path, size) headers (io/tar.h).
// Classes: one name a line in classes.txt beside the shards when present (labels must be below
// their count), else num_classes = max label + 1, named "0", "1", ....
// fetch() preads the image bytes from the shard, kept open (one descriptor per shard; the soft
// limit on open files is raised when they would not fit). Errors name the shard and the byte
// offset: a truncated tar, a bad header checksum, an image without its .cls, a .cls that is not
// a non-negative integer, a .cls without an image. A shard whose size or time changed since it
// was indexed is read again at open; one shortened after opening makes fetch() fail naming it.
std::unique_ptr<Dataset> open_tar_shards(const std::string& spec,
                                         const TarShardsOptions& options = {});

}  // namespace mokd::data
