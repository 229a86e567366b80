// Dataset readers over many files: ImageFolder's index (written, reused, rebuilt when a folder
// changed or the index is damaged, a read-only folder).
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include "io/dataset.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

namespace fs = std::filesystem;
using namespace mokd::data;
using test::expect_error;

// A fresh temporary folder per test, world-readable so that an unprivileged child can use it.
class TempDir {
 public:
  TempDir() {
    dir_ = fs::temp_directory_path() /
           ("mokd_readers_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    remove();
    fs::create_directories(dir_);
    fs::permissions(dir_, fs::perms(0755));
  }
  ~TempDir() { remove(); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string root() const { return dir_.string(); }

 private:
  void remove() {
    std::error_code ec;
    if (fs::exists(dir_, ec))  // read-only folders left by a test must be writable to go
      for (const auto& e : fs::recursive_directory_iterator(dir_, ec))
        if (e.is_directory(ec)) fs::permissions(e.path(), fs::perms(0755), ec);
    fs::remove_all(dir_, ec);
  }
  fs::path dir_;
};

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

}  // namespace
}  // namespace mokd
