// Index files of datasets: read/verify, atomic write, the user's cache folder (io/index_cache.h).
#include "io/index_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <vector>

#include "io/sha256.h"

namespace mokd::data::index_cache {

namespace fs = std::filesystem;

namespace {

// Coarse file-system clocks tick every few milliseconds and network file systems may lag the
// local clock: a time this old can no longer be repeated by a later change.
constexpr int64_t kSettleNs = 2'000'000'000;

uint32_t crc_of(const char* p, size_t n) {
  uLong crc = crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes lengths as uInt
    const uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    crc = crc32(crc, reinterpret_cast<const Bytef*>(p), chunk);
    p += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(crc);
}

std::string end_line(const std::string& content) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "end %08x\n", crc_of(content.data(), content.size()));
  return buf;
}

bool write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

}  // namespace

int64_t mtime_ns(const std::string& path, int64_t* size) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  if (size) *size = static_cast<int64_t>(st.st_size);
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

int64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

int64_t settled(int64_t mtime, int64_t checked_at) {
  return mtime >= 0 && mtime + kSettleNs <= checked_at ? mtime : -1;
}

std::string user_cache_dir() {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  if (xdg && *xdg == '/') return std::string(xdg) + "/mokd";
  const char* home = std::getenv("HOME");
  if (home && *home) return std::string(home) + "/.cache/mokd";
  return "";
}

std::string user_cache_path(const std::string& prefix, const std::string& key) {
  const std::string dir = user_cache_dir();
  if (dir.empty()) return "";
  return dir + "/" + prefix + "-" + sha256_hex(key).substr(0, 16) + ".idx";
}

ReadStatus read(const std::string& path, const std::string& magic, std::string* body,
                std::string* why) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return ReadStatus::kMissing;
    *why = std::string("cannot open it: ") + std::strerror(errno);
    return ReadStatus::kInvalid;
  }
  std::string text;
  struct stat st;
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  if (ok) {
    text.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < text.size()) {
      const ssize_t r = ::read(fd, text.data() + got, text.size() - got);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) break;
      got += static_cast<size_t>(r);
    }
    ok = got == text.size();
  }
  ::close(fd);
  if (!ok) {
    *why = "cannot read it";
    return ReadStatus::kInvalid;
  }
  const std::string head = magic + "\n";
  if (text.compare(0, head.size(), head) != 0) {
    *why = "it does not start with '" + magic + "'";
    return ReadStatus::kInvalid;
  }
  // The end line: "end xxxxxxxx\n", 13 bytes.
  constexpr size_t kEnd = 13;
  if (text.size() < head.size() + kEnd || text.compare(text.size() - kEnd, 4, "end ") != 0 ||
      text.back() != '\n' || text[text.size() - kEnd - 1] != '\n') {
    *why = "it is truncated (no end line)";
    return ReadStatus::kInvalid;
  }
  char expected[16];
  std::snprintf(expected, sizeof expected, "%08x", crc_of(text.data(), text.size() - kEnd));
  if (text.compare(text.size() - kEnd + 4, 8, expected) != 0) {
    *why = "its checksum does not match its contents";
    return ReadStatus::kInvalid;
  }
  text.resize(text.size() - kEnd);
  text.erase(0, head.size());
  *body = std::move(text);
  return ReadStatus::kOk;
}

bool write(const std::string& path, const std::string& magic, const std::string& body,
           bool create_dir, std::string* why) {
  const fs::path dir = fs::path(path).parent_path();
  if (create_dir) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
      *why = "cannot create " + dir.string() + ": " + ec.message();
      return false;
    }
  }
  std::string tmp = path + ".tmp.XXXXXX";
  const int fd = ::mkstemp(tmp.data());
  if (fd < 0) {
    *why = "cannot create a file in " + dir.string() + ": " + std::strerror(errno);
    return false;
  }
  const std::string content = magic + "\n" + body;
  const std::string end = end_line(content);
  bool ok = ::fchmod(fd, 0644) == 0 && write_all(fd, content.data(), content.size()) &&
            write_all(fd, end.data(), end.size());
  if (!ok) *why = "writing " + tmp + " failed: " + std::strerror(errno);
  if (::close(fd) != 0 && ok) {
    ok = false;
    *why = "closing " + tmp + " failed: " + std::strerror(errno);
  }
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    *why = "renaming " + tmp + " to " + path + " failed: " + std::strerror(errno);
  }
  if (!ok) ::unlink(tmp.c_str());
  return ok;
}

std::string store(const std::string& beside, const std::string& fallback, const std::string& magic,
                  const std::string& body, std::string* why) {
  std::string why_beside;
  if (write(beside, magic, body, false, &why_beside)) return beside;
  *why = why_beside;
  if (fallback.empty()) return "";
  std::string why_fallback;
  if (write(fallback, magic, body, true, &why_fallback)) return fallback;
  *why += "; " + why_fallback;
  return "";
}

bool next_line(std::string_view text, size_t* pos, std::string_view* line) {
  if (*pos >= text.size()) return false;
  const size_t nl = text.find('\n', *pos);
  const size_t end = nl == std::string_view::npos ? text.size() : nl;
  *line = text.substr(*pos, end - *pos);
  *pos = end + 1;
  return true;
}

bool parse_i64(std::string_view s, int64_t* v) {
  if (s.empty()) return false;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), *v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

}  // namespace mokd::data::index_cache
