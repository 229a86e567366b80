// Dataset readers over many files: ImageFolder's index (written, reused, rebuilt when a folder
// changed or the index is damaged, a read-only folder) and WebDataset tar shards: order, labels
// and bytes against Python's tarfile (fixtures of tools/reference/data_tar.py: GNU, pax and ustar
// headers), the offset index, brace patterns, every malformed-shard error (crafted here with a
// small tar writer), a shard changed after it was indexed, four threads fetching at once, and
// data.dataset = "tar_shards" in mokd/setup.
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <thread>

#include "io/dataset.h"
#include "io/sha256.h"
#include "mokd/config.h"
#include "mokd/setup.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

namespace fs = std::filesystem;
using namespace mokd::data;
using test::expect_error;

using test::TempDir;

// Sets an environment variable for the scope of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string fetched(const Dataset& ds, int64_t i, int64_t* label = nullptr) {
  RawSample raw;
  ds.fetch(i, &raw);
  EXPECT_TRUE(raw.encoded);
  if (label) *label = raw.label;
  return std::string(raw.bytes.begin(), raw.bytes.end());
}

// Moves a file's or folder's modification time an hour back: data that has been sitting there,
// whose times an index may record (a time of the last few seconds is rechecked at every open).
fs::file_time_type backdate(const std::string& path) {
  const auto t = fs::file_time_type::clock::now() - std::chrono::hours(1);
  fs::last_write_time(path, t);
  return t;
}

// Runs f in the test, or, when the tests run as root (whom permissions do not stop), in a child
// process as user nobody. f returns "" on success, else what failed.
std::string unprivileged(const std::function<std::string()>& f) {
  if (::geteuid() != 0) return f();
  int fds[2];
  if (::pipe(fds) != 0) return "pipe failed";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    std::string result;
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) {
      result = "cannot become user nobody";
    } else {
      try {
        result = f();
      } catch (const std::exception& e) {
        result = std::string("threw: ") + e.what();
      }
    }
    if (::write(fds[1], result.data(), result.size()) < 0) _exit(2);
    _exit(0);
  }
  ::close(fds[1]);
  std::string out;
  char buf[512];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "the child process failed";
  return out;
}

// ---------------------------------------------------------------- ImageFolder index

int64_t fetched_label(const Dataset& ds, int64_t i) {
  RawSample raw;
  try {
    ds.fetch(i, &raw);
  } catch (const Error&) {
    return -1;  // a file gone
  }
  return raw.label;
}

// What the split holds, for comparing two openings: source and label of every sample.
std::vector<std::string> listing_of(const Dataset& ds) {
  std::vector<std::string> out;
  for (int64_t i = 0; i < ds.size(); ++i)
    out.push_back(ds.source(i) + " " + std::to_string(fetched_label(ds, i)));
  for (const std::string& n : ds.class_names()) out.push_back("class " + n);
  return out;
}

std::unique_ptr<Dataset> open_folder(const std::string& root, IndexReport* report,
                                     bool cache = true) {
  ImageFolderOptions o;
  o.index_cache = cache;
  o.report = report;
  return open_image_folder(root, o);
}

// root/a/{1,2}.png, root/b/3.jpg, root/empty/, folders backdated.
void make_folder(const TempDir& t) {
  write_bytes(t.path("data/a/1.png"), "png one");
  write_bytes(t.path("data/a/2.png"), "png two");
  write_bytes(t.path("data/b/3.jpg"), "jpeg three");
  write_bytes(t.path("data/b/notes.txt"), "not an image");
  fs::create_directories(t.path("data/empty"));
  for (const char* d : {"data/a", "data/b", "data/empty"}) backdate(t.path(d));
}

TEST(ReadersImageFolderIndex, WrittenReusedAndRebuiltWhenAFolderChanges) {
  TempDir t;
  ScopedEnv cache("XDG_CACHE_HOME", t.path("cache"));
  make_folder(t);
  const std::string root = t.path("data"), index = t.path("data/.mokd_index");

  IndexReport off;
  auto plain = open_folder(root, &off, false);
  EXPECT_FALSE(fs::exists(index)) << "index_cache = false writes no index";
  EXPECT_FALSE(fs::exists(t.path("cache")));
  EXPECT_EQ(off.listed, 3);
  EXPECT_FALSE(off.written);

  IndexReport r1;
  auto first = open_folder(root, &r1);
  EXPECT_EQ(r1.path, index);
  EXPECT_TRUE(r1.written);
  EXPECT_EQ(r1.listed, 3);
  EXPECT_EQ(r1.reused, 0);
  ASSERT_TRUE(fs::exists(index));
  EXPECT_EQ(listing_of(*first), listing_of(*plain));
  ASSERT_EQ(first->size(), 3);
  EXPECT_EQ(first->class_names(), (std::vector<std::string>{"a", "b"}));

  IndexReport r2;
  testing::internal::CaptureStderr();
  auto second = open_folder(root, &r2);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(r2.path, index);
  EXPECT_EQ(r2.reused, 3);
  EXPECT_EQ(r2.listed, 0);
  EXPECT_FALSE(r2.written);
  EXPECT_EQ(listing_of(*second), listing_of(*plain));
  int64_t label = -1;
  EXPECT_EQ(fetched(*second, 2, &label), "jpeg three");
  EXPECT_EQ(label, 1);

  // The listing really comes from the index: a file removed behind its back (the folder's time
  // put back) is still listed, which no fresh listing would do.
  const auto a_time = fs::last_write_time(t.path("data/a"));
  fs::remove(t.path("data/a/2.png"));
  fs::last_write_time(t.path("data/a"), a_time);
  auto stale = open_folder(root, nullptr);
  ASSERT_EQ(stale->size(), 3);
  EXPECT_EQ(stale->source(1), t.path("data/a/2.png"));
  expect_error([&] { fetched(*stale, 1); }, {t.path("data/a/2.png"), "cannot open"});
  EXPECT_EQ(open_folder(root, nullptr, false)->size(), 2);

  // A file added: that folder is listed again, the others reused; one line on stderr.
  write_bytes(t.path("data/a/4.png"), "png four");
  IndexReport r3;
  testing::internal::CaptureStderr();
  auto added = open_folder(root, &r3);
  const std::string note = testing::internal::GetCapturedStderr();
  EXPECT_NE(note.find(index), std::string::npos) << note;
  EXPECT_NE(note.find("out of date"), std::string::npos) << note;
  EXPECT_EQ(std::count(note.begin(), note.end(), '\n'), 1) << note;
  EXPECT_EQ(r3.listed, 1);
  EXPECT_EQ(r3.reused, 2);
  EXPECT_TRUE(r3.written);
  EXPECT_EQ(listing_of(*added), listing_of(*open_folder(root, nullptr, false)));
  EXPECT_EQ(added->source(1), t.path("data/a/4.png"));

  // Folder a changed seconds ago: its time is not trusted yet, so it is listed again (silently)
  // until it has settled.
  IndexReport r4;
  testing::internal::CaptureStderr();
  open_folder(root, &r4);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(r4.listed, 1);
  backdate(t.path("data/a"));
  IndexReport r4b, r4c;
  open_folder(root, &r4b);
  EXPECT_EQ(r4b.listed, 1);
  open_folder(root, &r4c);
  EXPECT_EQ(r4c.reused, 3);

  // A class added, and an image in the empty folder: both noticed.
  write_bytes(t.path("data/c/5.png"), "png five");
  write_bytes(t.path("data/empty/6.png"), "png six");
  backdate(t.path("data/c"));
  backdate(t.path("data/empty"));
  IndexReport r5;
  testing::internal::CaptureStderr();
  auto grown = open_folder(root, &r5);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("2 class folders changed"),
            std::string::npos);
  EXPECT_EQ(r5.listed, 2);
  EXPECT_EQ(grown->class_names(), (std::vector<std::string>{"a", "b", "c", "empty"}));
  EXPECT_EQ(listing_of(*grown), listing_of(*open_folder(root, nullptr, false)));
  EXPECT_EQ(fetched(*grown, 4, &label), "png six");
  EXPECT_EQ(label, 3);

  // A class folder removed.
  fs::remove_all(t.path("data/c"));
  IndexReport r6;
  testing::internal::CaptureStderr();
  auto shrunk = open_folder(root, &r6);
  EXPECT_NE(testing::internal::GetCapturedStderr().find("1 class folder changed"),
            std::string::npos);
  EXPECT_EQ(shrunk->class_names(), (std::vector<std::string>{"a", "b", "empty"}));
  EXPECT_EQ(r6.listed, 0);
  EXPECT_TRUE(r6.written);
  EXPECT_FALSE(fs::exists(t.path("cache"))) << "a writable folder keeps its index beside the data";
}

// The crc32 end line of an index file, so that a test can write one whose body is wrong but whose
// checksum holds.
std::string with_end_line(const std::string& content) {
  char buf[32];
  std::snprintf(
      buf, sizeof buf, "end %08lx\n",
      crc32(0, reinterpret_cast<const Bytef*>(content.data()), static_cast<uInt>(content.size())));
  return content + buf;
}

TEST(ReadersImageFolderIndex, DamagedIndexIsRebuiltWithANote) {
  TempDir t;
  ScopedEnv cache("XDG_CACHE_HOME", t.path("cache"));
  make_folder(t);
  const std::string root = t.path("data"), index = t.path("data/.mokd_index");
  const std::vector<std::string> expected = listing_of(*open_folder(root, nullptr, false));
  open_folder(root, nullptr);
  const std::string good = read_bytes(index);
  ASSERT_FALSE(good.empty());
  std::string flipped = good;
  flipped[flipped.find("2.png")] = '7';  // a name changed: the checksum no longer matches
  const std::string body_start = good.substr(0, good.find('\n') + 1);
  struct Case {
    const char* what;
    std::string bytes;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"garbage", std::string("\x01\x02garbage\n", 10), "does not start with"},
      {"empty", "", "does not start with"},
      {"truncated", good.substr(0, good.size() / 2), "truncated"},
      {"flipped", flipped, "checksum"},
      {"malformed", with_end_line(body_start + "root /x\nclass oops\n"), "not 'class"},
      {"short", with_end_line(body_start + "root /x\nclass 5 3 a\n1.png\n"), "fewer than"},
      {"outside", with_end_line(body_start + "root /x\nclass 5 1 a\n../../b/3.jpg\n"),
       "not an image file name"},
  };
  for (const Case& c : cases) {
    write_bytes(index, c.bytes);
    IndexReport r;
    testing::internal::CaptureStderr();
    std::unique_ptr<Dataset> ds;
    EXPECT_NO_THROW(ds = open_folder(root, &r)) << c.what;
    const std::string note = testing::internal::GetCapturedStderr();
    EXPECT_NE(note.find(index + " is damaged"), std::string::npos) << c.what << ": " << note;
    EXPECT_NE(note.find(c.reason), std::string::npos) << c.what << ": " << note;
    EXPECT_EQ(std::count(note.begin(), note.end(), '\n'), 1) << c.what << ": " << note;
    EXPECT_EQ(r.listed, 3) << c.what;
    EXPECT_TRUE(r.written) << c.what;
    if (ds) EXPECT_EQ(listing_of(*ds), expected) << c.what;
    EXPECT_EQ(read_bytes(index), good) << c.what << ": rewritten as before";
  }
}

TEST(ReadersImageFolderIndex, ReadOnlyFolderUsesTheUserCacheOrNone) {
  TempDir t;
  make_folder(t);
  const std::string root = t.path("data");
  fs::create_directories(t.path("cache"));
  if (::geteuid() == 0) ASSERT_EQ(::chown(t.path("cache").c_str(), 65534, 65534), 0);
  for (const char* d : {"data/a", "data/b", "data/empty", "data"})
    fs::permissions(t.path(d), fs::perms(0555));
  const std::vector<std::string> expected = listing_of(*open_folder(root, nullptr, false));
  const std::string result = unprivileged([&]() -> std::string {
    ScopedEnv cache("XDG_CACHE_HOME", t.path("cache"));
    IndexReport r1, r2, r3;
    auto a = open_folder(root, &r1);
    if (listing_of(*a) != expected) return "listing differs";
    if (fs::exists(t.path("data/.mokd_index"))) return "wrote into the read-only folder";
    if (!r1.written || r1.path.rfind(t.path("cache/mokd/image-folder-"), 0) != 0)
      return "index not written under the user cache: '" + r1.path + "'";
    open_folder(root, &r2);
    if (r2.path != r1.path || r2.reused != 3) return "user-cache index not reused";
    // No writable place at all: still opens, without an index.
    ScopedEnv nowhere("XDG_CACHE_HOME", t.path("data/empty"));
    testing::internal::CaptureStderr();
    auto b = open_folder(root, &r3);
    const std::string note = testing::internal::GetCapturedStderr();
    if (note.find("listing not saved as an index") == std::string::npos)
      return "no note that the index was not saved: " + note;
    if (listing_of(*b) != expected) return "listing without an index differs";
    if (r3.written || !r3.path.empty()) return "claims an index was written";
    return "";
  });
  EXPECT_EQ(result, "");
}

// ---------------------------------------------------------------- tar shards

// A small tar writer: ustar headers, optional pax and GNU long-name records, the end blocks.
class TarWriter {
 public:
  TarWriter& file(const std::string& name, const std::string& data, char type = '0') {
    header(name, static_cast<int64_t>(data.size()), type);
    out_ += data;
    pad();
    return *this;
  }
  TarWriter& pax(const std::vector<std::pair<std::string, std::string>>& records) {
    std::string data;
    for (const auto& [k, v] : records) {
      const std::string body = " " + k + "=" + v + "\n";
      size_t len = body.size() + 1;
      while (std::to_string(len).size() + body.size() != len) ++len;
      data += std::to_string(len) + body;
    }
    return file("PaxHeader", data, 'x');
  }
  TarWriter& long_name(const std::string& name) { return file("././@LongLink", name + '\0', 'L'); }
  // A header whose size field says `size` while `data` follows (for pax size records).
  TarWriter& file_sized(const std::string& name, const std::string& data, int64_t size) {
    header(name, size, '0');
    out_ += data;
    pad();
    return *this;
  }
  TarWriter& end() {
    out_.append(1024, '\0');
    return *this;
  }
  int64_t offset() const { return static_cast<int64_t>(out_.size()); }
  const std::string& bytes() const { return out_; }
  void save(const std::string& path) const { write_bytes(path, out_); }

 private:
  void header(const std::string& name, int64_t size, char type) {
    std::string h(512, '\0');
    std::memcpy(h.data(), name.data(), std::min<size_t>(name.size(), 100));
    std::snprintf(h.data() + 100, 8, "%07o", 0644);
    std::snprintf(h.data() + 108, 8, "%07o", 0);
    std::snprintf(h.data() + 116, 8, "%07o", 0);
    std::snprintf(h.data() + 124, 12, "%011llo", static_cast<unsigned long long>(size));
    std::snprintf(h.data() + 136, 12, "%011o", 1700000000u);
    h[156] = type;
    std::memcpy(h.data() + 257,
                "ustar\0"
                "00",
                8);
    std::memset(h.data() + 148, ' ', 8);
    unsigned sum = 0;
    for (unsigned char c : h) sum += c;
    std::snprintf(h.data() + 148, 8, "%06o", sum);
    h[155] = ' ';
    out_ += h;
  }
  void pad() { out_.append((512 - out_.size() % 512) % 512, '\0'); }
  std::string out_;
};

std::unique_ptr<Dataset> open_shards(const std::string& spec, IndexReport* report,
                                     bool cache = true) {
  TarShardsOptions o;
  o.index_cache = cache;
  o.report = report;
  return open_tar_shards(spec, o);
}

std::string fixture_bytes(const test::Fixture& fx, const std::string& name, size_t begin,
                          size_t n) {
  const std::vector<float> v = fx[name].to_vector();
  std::string s;
  for (size_t i = begin; i < begin + n; ++i) s += static_cast<char>(static_cast<uint8_t>(v[i]));
  return s;
}

TEST(ReadersTarShards, MatchPythonTarfileWalk) {
  const test::Fixture fx("data_tar.safetensors");
  TempDir t;
  ScopedEnv cache("XDG_CACHE_HOME", t.path("cache"));
  std::vector<std::string> all_sources;
  std::vector<int64_t> all_labels;
  for (const std::string c : {"gnu", "pax", "ustar"}) {
    SCOPED_TRACE(c);
    const std::string file = fx.param_s(c + ".file");
    ASSERT_EQ(sha256_file(test::fixture_path(file)), fx.param_s(c + ".sha256"))
        << "tests/data/" << file << " is not the shard data_tar.safetensors describes";
    fs::create_directories(t.path("shards"));
    fs::copy_file(test::fixture_path(file), t.path("shards/" + file));
    const std::vector<int64_t> labels = fx[c + "_labels"].to_vector_i64();
    const std::vector<int64_t> sizes = fx[c + "_sizes"].to_vector_i64();
    const nlohmann::json& members = fx.param(c + ".members");
    backdate(t.path("shards/" + file));
    // Read without an index, then writing one, then from it.
    for (int pass = 0; pass < 3; ++pass) {
      const bool cache_on = pass > 0;
      IndexReport r;
      auto ds = open_shards(t.path("shards/" + file), &r, cache_on);
      EXPECT_EQ(r.listed, pass < 2 ? 1 : 0) << pass;
      EXPECT_EQ(r.reused, pass < 2 ? 0 : 1) << pass;
      EXPECT_EQ(r.written, pass == 1) << pass;
      ASSERT_EQ(ds->size(), static_cast<int64_t>(labels.size()));
      int64_t max_label = 0;
      size_t at = 0;
      for (int64_t i = 0; i < ds->size(); ++i) {
        int64_t label = -1;
        const std::string bytes = fetched(*ds, i, &label);
        EXPECT_EQ(label, labels[i]) << i;
        EXPECT_EQ(bytes, fixture_bytes(fx, c + "_images", at, sizes[i])) << i;
        EXPECT_EQ(ds->source(i), t.path("shards/" + file) + ":" + members[i].get<std::string>());
        at += sizes[i];
        max_label = std::max(max_label, labels[i]);
        if (cache_on) continue;
        all_sources.push_back(ds->source(i));
        all_labels.push_back(label);
      }
      EXPECT_EQ(ds->num_classes(), max_label + 1);
      EXPECT_EQ(ds->class_names().back(), std::to_string(max_label));
      EXPECT_EQ(ds->channels(), 3);
      EXPECT_EQ(ds->height(), 0);
    }
  }
  // All three as a folder and as a brace list: the same samples in name order.
  for (const std::string spec : {t.path("shards"), t.path("shards/data_tar_{gnu,pax,ustar}.tar")}) {
    auto ds = open_shards(spec, nullptr);
    ASSERT_EQ(ds->size(), static_cast<int64_t>(all_sources.size())) << spec;
    for (int64_t i = 0; i < ds->size(); ++i) {
      int64_t label = -1;
      fetched(*ds, i, &label);
      EXPECT_EQ(ds->source(i), all_sources[i]) << spec;
      EXPECT_EQ(label, all_labels[i]) << spec;
    }
    EXPECT_EQ(ds->location(), spec);
  }
}

// A shard of n samples key_<first + i>.jpg / .cls, label (first + i) % 10; image bytes depend on
// `salt`.
std::string image_of(int64_t i, int salt) {
  std::string s = "image " + std::to_string(i) + " salt " + std::to_string(salt) + " ";
  s.append(static_cast<size_t>((i * 37 + salt * 11) % 900), static_cast<char>('a' + i % 26));
  return s;
}

void make_shard(const std::string& path, int64_t first, int64_t n, int salt = 0,
                int label_shift = 0) {
  TarWriter w;
  for (int64_t i = first; i < first + n; ++i)
    w.file("key_" + std::to_string(i) + ".jpg", image_of(i, salt))
        .file("key_" + std::to_string(i) + ".cls", std::to_string((i + label_shift) % 10));
  w.end().save(path);
}

std::string tar_index_in(const std::string& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(".mokd_tar_index-", 0) == 0) return e.path().string();
  return "";
}

TEST(ReadersTarShards, OffsetIndexWrittenReusedAndRebuilt) {
  TempDir t;
  ScopedEnv cache("XDG_CACHE_HOME", t.path("cache"));
  const std::string dir = t.path("train");
  for (int s = 0; s < 3; ++s) {
    make_shard(t.path("train/shard-" + std::to_string(s) + ".tar"), s * 20, 20);
    backdate(t.path("train/shard-" + std::to_string(s) + ".tar"));
  }
  IndexReport r1, r2;
  auto first = open_shards(dir, &r1);
  EXPECT_EQ(r1.listed, 3);
  EXPECT_TRUE(r1.written);
  EXPECT_EQ(r1.path, tar_index_in(dir));
  ASSERT_EQ(first->size(), 60);
  testing::internal::CaptureStderr();
  auto second = open_shards(dir, &r2);
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "");
  EXPECT_EQ(r2.reused, 3);
  EXPECT_EQ(r2.listed, 0);
  EXPECT_FALSE(r2.written);
  for (int64_t i = 0; i < 60; ++i) {
    int64_t label = -1;
    EXPECT_EQ(fetched(*second, i, &label), image_of(i, 0));
    EXPECT_EQ(label, i % 10);
    EXPECT_EQ(second->source(i), first->source(i));
  }
  // The labels really come from the index: shard 1 rewritten with other labels but the same size
  // and time is not read again.
  const std::string s1 = t.path("train/shard-1.tar");
  const auto s1_time = fs::last_write_time(s1);
  make_shard(s1, 20, 20, 0, 3);
  fs::last_write_time(s1, s1_time);
  int64_t label = -1;
  fetched(*open_shards(dir, nullptr), 20, &label);
  EXPECT_EQ(label, 0) << "the index's label";
  fetched(*open_shards(dir, nullptr, false), 20, &label);
  EXPECT_EQ(label, 3) << "the shard's label";

  // Rewritten with other bytes (size and time change): read again, with a note.
  make_shard(s1, 20, 20, 5);
  backdate(s1);
  IndexReport r3;
  testing::internal::CaptureStderr();
  auto rewritten = open_shards(dir, &r3);
  const std::string note = testing::internal::GetCapturedStderr();
  EXPECT_NE(note.find(tar_index_in(dir) + " is out of date (1 shard changed"), std::string::npos)
      << note;
  EXPECT_EQ(r3.listed, 1);
  EXPECT_EQ(r3.reused, 2);
  for (int64_t i = 0; i < 60; ++i)
    EXPECT_EQ(fetched(*rewritten, i), image_of(i, i / 20 == 1 ? 5 : 0));

  // A shard added to the folder.
  make_shard(t.path("train/shard-3.tar"), 60, 5);
  backdate(t.path("train/shard-3.tar"));
  IndexReport r4;
  testing::internal::CaptureStderr();
  auto grown = open_shards(dir, &r4);
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(r4.listed, 1);
  EXPECT_EQ(r4.reused, 3);
  ASSERT_EQ(grown->size(), 65);
  EXPECT_EQ(fetched(*grown, 64), image_of(64, 0));

  // An index entry pointing outside its shard (its checksum recomputed): damaged, rebuilt.
  const std::string index = tar_index_in(dir);
  std::string text = read_bytes(index);
  text.resize(text.size() - 13);  // the end line
  const size_t entry = text.find("\n", text.find("shard-0.tar")) + 1;
  text.replace(entry, text.find(' ', entry) - entry, "999999");
  write_bytes(index, with_end_line(text));
  IndexReport r5;
  testing::internal::CaptureStderr();
  auto repaired = open_shards(dir, &r5);
  const std::string note5 = testing::internal::GetCapturedStderr();
  EXPECT_NE(note5.find(index + " is damaged"), std::string::npos) << note5;
  EXPECT_NE(note5.find("within the shard"), std::string::npos) << note5;
  EXPECT_EQ(r5.listed, 4);
  EXPECT_EQ(fetched(*repaired, 0), image_of(0, 0));

  // A pattern over the same folder keeps its own index.
  IndexReport r6;
  auto some = open_shards(t.path("train/shard-{1..2}.tar"), &r6);
  EXPECT_EQ(some->size(), 40);
  EXPECT_EQ(fetched(*some, 0), image_of(20, 5));
  EXPECT_TRUE(r6.written);
  EXPECT_NE(r6.path, index);
  EXPECT_EQ(fs::path(r6.path).parent_path(), fs::path(dir));
}

TEST(ReadersTarShards, ReadOnlyFolderUsesTheUserCache) {
  TempDir t;
  make_shard(t.path("ro/a.tar"), 0, 7);
  backdate(t.path("ro/a.tar"));
  fs::create_directories(t.path("cache"));
  if (::geteuid() == 0) ASSERT_EQ(::chown(t.path("cache").c_str(), 65534, 65534), 0);
  fs::permissions(t.path("ro"), fs::perms(0555));
  const std::string result = unprivileged([&]() -> std::string {
    ScopedEnv cache("XDG_CACHE_HOME", t.path("cache"));
    IndexReport r1, r2;
    auto ds = open_shards(t.path("ro"), &r1);
    if (ds->size() != 7 || fetched(*ds, 6) != image_of(6, 0)) return "wrong samples";
    if (!tar_index_in(t.path("ro")).empty()) return "wrote into the read-only folder";
    if (!r1.written || r1.path.rfind(t.path("cache/mokd/tar-shards-"), 0) != 0)
      return "index not under the user cache: '" + r1.path + "'";
    open_shards(t.path("ro"), &r2);
    if (r2.reused != 1 || r2.path != r1.path) return "user-cache index not reused";
    return "";
  });
  EXPECT_EQ(result, "");
}

TEST(ReadersTarShards, BracePatterns) {
  TempDir t;
  for (const char* n : {"p-000.tar", "p-001.tar", "p-002.tar", "q-8.tar", "q-9.tar", "q-10.tar",
                        "r-a-1.tar", "r-a-2.tar", "r-b-1.tar", "r-b-2.tar"})
    make_shard(t.path(std::string("s/") + n), 0, 1);
  auto count = [&](const std::string& pattern) {
    return open_shards(t.path("s/" + pattern), nullptr, false)->size();
  };
  EXPECT_EQ(count("p-{000..002}.tar"), 3);
  EXPECT_EQ(count("q-{8..10}.tar"), 3);  // no padding: 8, 9, 10
  EXPECT_EQ(count("p-{002..000}.tar"), 3);
  EXPECT_EQ(count("{p-000,q-10,q-8}.tar"), 3);
  EXPECT_EQ(count("p-000.tar"), 1);
  auto ds = open_shards(t.path("s/q-{10..8}.tar"), nullptr, false);
  EXPECT_EQ(ds->source(0), t.path("s/q-10.tar") + ":key_0.jpg");
  auto two =
      open_shards(t.path("s/r-{b,a}-{1..2}.tar"), nullptr, false);  // the first varies slowest
  ASSERT_EQ(two->size(), 4);
  const char* order[] = {"r-b-1", "r-b-2", "r-a-1", "r-a-2"};
  for (int i = 0; i < 4; ++i)
    EXPECT_EQ(two->source(i), t.path(std::string("s/") + order[i] + ".tar") + ":key_0.jpg");
  expect_error([&] { count("p-{000..003}.tar"); }, {t.path("s/p-003.tar"), "not found"});
  expect_error([&] { count("p-{000..002.tar"); }, {"unmatched '{'"});
  expect_error([&] { count("p-{a..c}.tar"); }, {"{a..c}", "non-negative integers"});
  expect_error([&] { open_shards(t.path("{s}/p-000.tar"), nullptr, false); }, {"file name only"});
  expect_error([&] { open_shards(t.path("none.tar"), nullptr, false); },
               {t.path("none.tar"), "not found"});
  fs::create_directories(t.path("bare"));
  expect_error([&] { open_shards(t.path("bare"), nullptr, false); },
               {t.path("bare"), "no .tar files"});
}

TEST(ReadersTarShards, MalformedShardsNameTheShardAndOffset) {
  TempDir t;
  auto error_of = [&](const std::string& name, const std::string& bytes) {
    write_bytes(t.path(name), bytes);
    return test::error_of([&] { open_shards(t.path(name), nullptr, false); });
  };
  auto expect = [&](const std::string& name, const std::string& bytes,
                    const std::vector<std::string>& parts) {
    const std::string e = error_of(name, bytes);
    EXPECT_NE(e.find(t.path(name)), std::string::npos) << name << ": " << e;
    for (const std::string& p : parts) EXPECT_NE(e.find(p), std::string::npos) << name << ": " << e;
  };
  TarWriter good;
  good.file("a.jpg", std::string(700, 'x')).file("a.cls", "1");  // a.cls header at 1536
  good.file("b.jpg", "bb").file("b.cls", "2").end();
  const std::string g = good.bytes();

  expect("cut_data.tar", g.substr(0, 1000), {"truncated", "'a.jpg'", "byte offset 0"});
  expect("cut_header.tar", g.substr(0, 1536 + 100), {"truncated", "byte offset 1536"});
  expect("no_end.tar", g.substr(0, g.size() - 1024),
         {"truncated", "end-of-archive", "byte offset 4608"});
  std::string bad_sum = g;
  bad_sum[1536 + 10] = 'Z';  // in the name field of a.cls's header
  expect("checksum.tar", bad_sum, {"checksum mismatch", "byte offset 1536"});
  std::string not_tar(2048, 'q');
  expect("not_tar.tar", not_tar, {"byte offset 0"});

  TarWriter no_cls;
  no_cls.file("a.jpg", "aa").file("a.cls", "0").file("b.png", "bb").file("c.jpg", "c");
  no_cls.file("c.cls", "1").end();
  expect("no_cls.tar", no_cls.bytes(), {"'b.png'", "byte offset 2048", "no label member 'b.cls'"});
  TarWriter last_no_cls;
  last_no_cls.file("a.jpg", "aa").end();
  expect("last_no_cls.tar", last_no_cls.bytes(), {"'a.jpg'", "byte offset 0", "'a.cls'"});

  for (const std::string bad : {"abc", "-1", "1.5", "+3", "", "1 2", "99999999999999999999"}) {
    TarWriter w;
    w.file("a.jpg", "aa").file("a.cls", "1").file("b.jpg", "bb").file("b.cls", bad).end();
    expect("bad_cls.tar", w.bytes(), {"'b.cls'", "byte offset 3072", "not a non-negative"});
  }
  TarWriter big_cls;
  big_cls.file("a.jpg", "aa").file("a.cls", std::string(100, '1')).end();
  expect("big_cls.tar", big_cls.bytes(), {"'a.cls'", "byte offset 1024", "not a non-negative"});

  TarWriter no_image;
  no_image.file("a.jpg", "aa").file("a.cls", "1").file("b.cls", "2").file("b.webp", "w").end();
  expect("no_image.tar", no_image.bytes(), {"sample 'b'", "byte offset 2048", "has no image"});
  TarWriter two_images;
  two_images.file("a.jpg", "aa").file("a.png", "pp").file("a.cls", "1").end();
  expect("two_images.tar", two_images.bytes(), {"two images", "byte offset 1024"});

  TarWriter bad_pax;
  bad_pax.file("PaxHeader", "12 path=x\n", 'x').file("a.jpg", "aa").end();
  expect("bad_pax.tar", bad_pax.bytes(), {"malformed pax record", "byte offset 0"});
  TarWriter pax_last;
  pax_last.pax({{"path", "x.jpg"}}).end();
  expect("pax_last.tar", pax_last.bytes(), {"extended header at byte offset 0"});

  // classes.txt names fewer classes than the labels need.
  TarWriter w;
  w.file("a.jpg", "aa").file("a.cls", "0").file("b.jpg", "bb").file("b.cls", "2").end();
  w.save(t.path("named/s.tar"));
  write_bytes(t.path("named/classes.txt"), "cat\ndog\n");
  expect_error(
      [&] { open_shards(t.path("named"), nullptr, false); },
      {t.path("named/s.tar"), "'b.jpg'", "label 2", t.path("named/classes.txt"), "2 class names"});
}

TEST(ReadersTarShards, PaxAndGnuRecordsWrittenHere) {
  TempDir t;
  TarWriter w;
  const std::string long_dir = std::string(150, 'd') + "/";
  w.long_name(long_dir + "x.jpg").file("ignored-short-name", "long-named image");
  w.long_name(long_dir + "x.cls").file("ignored-short-name.cls", "4");
  // The size only in the pax record (the ustar field says 0), then a member that is found only
  // when that size is honoured.
  w.pax({{"path", "sized.jpg"}, {"size", "1300"}}).file_sized("short", std::string(1300, 's'), 0);
  w.pax({{"comment", "a record the reader ignores"}}).file("sized.cls", "8");
  w.file("dir/", "", '5').file("link.jpg", "", '2');
  w.end().save(t.path("records.tar"));
  auto ds = open_shards(t.path("records.tar"), nullptr, false);
  ASSERT_EQ(ds->size(), 2);
  int64_t label = -1;
  EXPECT_EQ(fetched(*ds, 0, &label), "long-named image");
  EXPECT_EQ(label, 4);
  EXPECT_EQ(ds->source(0), t.path("records.tar") + ":" + long_dir + "x.jpg");
  EXPECT_EQ(fetched(*ds, 1, &label), std::string(1300, 's'));
  EXPECT_EQ(label, 8);
  EXPECT_EQ(ds->source(1), t.path("records.tar") + ":sized.jpg");
}

TEST(ReadersTarShards, ClassNamesFromClassesTxt) {
  TempDir t;
  make_shard(t.path("c/s.tar"), 0, 4);  // labels 0..3
  EXPECT_EQ(open_shards(t.path("c"), nullptr, false)->num_classes(), 4);
  std::string names;
  for (int i = 0; i < 10; ++i) names += "class_" + std::to_string(i) + "\r\n";
  write_bytes(t.path("c/classes.txt"), names);
  auto ds = open_shards(t.path("c/s.tar"), nullptr, false);
  EXPECT_EQ(ds->num_classes(), 10);
  EXPECT_EQ(ds->class_names()[9], "class_9");
  write_bytes(t.path("c/classes.txt"), "a\n\nb\n");
  expect_error([&] { open_shards(t.path("c"), nullptr, false); },
               {t.path("c/classes.txt"), "line 2 is empty"});
}

TEST(ReadersTarShards, ShardChangedAfterOpeningIsAnErrorNamingIt) {
  TempDir t;
  make_shard(t.path("s/a.tar"), 0, 10);
  auto ds = open_shards(t.path("s/a.tar"), nullptr);
  EXPECT_EQ(fetched(*ds, 9), image_of(9, 0));
  fs::resize_file(t.path("s/a.tar"), 4096);
  const std::string e = test::error_of([&] { fetched(*ds, 9); });
  EXPECT_NE(e.find(t.path("s/a.tar")), std::string::npos) << e;
  EXPECT_NE(e.find("'key_9.jpg'"), std::string::npos) << e;
  EXPECT_NE(e.find("byte offset"), std::string::npos) << e;
  EXPECT_NE(e.find("ends early"), std::string::npos) << e;
  // Reopened, the shortened shard is read again (its size changed) and reported as truncated.
  testing::internal::CaptureStderr();
  expect_error([&] { open_shards(t.path("s/a.tar"), nullptr); }, {t.path("s/a.tar"), "truncated"});
  testing::internal::GetCapturedStderr();
}

TEST(ReadersTarShards, FourThreadsFetchTheSameBytes) {
  TempDir t;
  for (int s = 0; s < 3; ++s) make_shard(t.path("m/" + std::to_string(s) + ".tar"), s * 70, 70);
  auto ds = open_shards(t.path("m"), nullptr, false);
  ASSERT_EQ(ds->size(), 210);
  std::atomic<int> bad{0}, done{0};
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([&, k] {
      RawSample raw;
      for (int rep = 0; rep < 5; ++rep)
        for (int64_t j = 0; j < ds->size(); ++j) {
          const int64_t i = (j * (2 * k + 1) + 13 * k) % ds->size();  // a different order each
          try {
            ds->fetch(i, &raw);
            if (std::string(raw.bytes.begin(), raw.bytes.end()) != image_of(i, 0) ||
                raw.label != i % 10)
              ++bad;
          } catch (const std::exception&) {
            ++bad;
          }
          ++done;
        }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(done.load(), 4 * 5 * 210);
}

TEST(ReadersSetup, TarShardsDataset) {
  TempDir t;
  make_shard(t.path("d/train/train-0.tar"), 0, 12);
  make_shard(t.path("d/train/train-1.tar"), 12, 8);
  make_shard(t.path("d/val/val-0.tar"), 0, 10);
  TrainConfig cfg;
  cfg.data.dataset = "tar_shards";
  cfg.data.dir = t.path("d");
  cfg.data.image_size = 32;
  auto train = open_dataset(cfg, true), val = open_dataset(cfg, false);
  EXPECT_EQ(train->size(), 20);
  EXPECT_EQ(val->size(), 10);
  EXPECT_EQ(train->num_classes(), 10);
  check_splits(cfg, *train, *val);
  cfg.data.train_shards = t.path("d/train/train-{0..0}.tar");
  EXPECT_EQ(open_dataset(cfg, true)->size(), 12);
  cfg.data.dir = "";
  cfg.data.val_shards = t.path("d/val");
  EXPECT_EQ(open_dataset(cfg, false)->size(), 10);
  cfg.data.train_shards = "";
  expect_error([&] { open_dataset(cfg, true); }, {"data.train_shards", "data.dir"});
}

}  // namespace
}  // namespace mokd
