// Tar header walking (io/tar.h). Layout of a 512-byte header (POSIX.1-1988 ustar, with the GNU
// and pax extensions): name[100] @0, size[12] @124 (octal, or base-256 when its first byte has
// the high bit set), chksum[8] @148, typeflag @156, magic[6] @257 ("ustar\0" POSIX, "ustar "
// GNU), prefix[155] @345 (POSIX only: the name's leading folders); GNU sparse headers flag
// extension blocks at @482 (and @504 of each extension block). Data follows the header, padded
// to 512 bytes; the archive ends with a zero block.
#include "io/tar.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ios>

#include "engine/error.h"

namespace mokd::data::tar {

namespace {

constexpr int64_t kBlock = 512;
constexpr int64_t kReadAhead = 4096;            // a header, a small member and the next header
constexpr int64_t kMaxExtended = 1 << 20;       // a long name or pax header larger is refused
constexpr int64_t kMaxSize = int64_t(1) << 56;  // no member is larger than this

int64_t padded(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

// A NUL-terminated (or full-width) string field.
std::string field(const uint8_t* p, size_t width) {
  size_t n = 0;
  while (n < width && p[n] != 0) ++n;
  return std::string(reinterpret_cast<const char*>(p), n);
}

// A numeric field: octal digits between optional spaces, ended by NUL or space (an empty field
// is 0), or GNU base-256. Returns false when it is neither.
bool number(const uint8_t* p, size_t width, int64_t* out) {
  if (p[0] & 0x80) {
    if (p[0] != 0x80) return false;  // 0xff: negative
    int64_t v = 0;
    for (size_t i = 1; i < width; ++i) {
      if (v > (kMaxSize >> 8)) return false;
      v = (v << 8) | p[i];
    }
    *out = v;
    return true;
  }
  size_t i = 0;
  while (i < width && p[i] == ' ') ++i;
  int64_t v = 0;
  for (; i < width && p[i] >= '0' && p[i] <= '7'; ++i) {
    if (v > (kMaxSize >> 3)) return false;
    v = v * 8 + (p[i] - '0');
  }
  for (; i < width; ++i)
    if (p[i] != ' ' && p[i] != 0) return false;
  *out = v;
  return true;
}

bool all_zero(const uint8_t* p) {
  return std::all_of(p, p + kBlock, [](uint8_t b) { return b == 0; });
}

}  // namespace

Reader::Reader(int fd, std::string path, int64_t file_size)
    : fd_(fd), path_(std::move(path)), file_size_(file_size) {}

const uint8_t* Reader::at(int64_t offset, int64_t n, const char* what) {
  if (offset >= buf_offset_ && offset + n <= buf_offset_ + static_cast<int64_t>(buf_.size()))
    return buf_.data() + (offset - buf_offset_);
  const int64_t want = std::min(std::max(n, kReadAhead), file_size_ - offset);
  MOKD_CHECK(want >= n, "tar ", path_, ": truncated: ", what, " at byte offset ", offset, " needs ",
             n, " bytes, the file ends at byte ", file_size_);
  buf_.resize(static_cast<size_t>(want));
  buf_offset_ = offset;
  size_t got = 0;
  while (got < buf_.size()) {
    const ssize_t r =
        ::pread(fd_, buf_.data() + got, buf_.size() - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      buf_.clear();
      MOKD_FAIL("tar ", path_, ": reading ", what, " at byte offset ", offset, " failed: ",
                r < 0 ? std::strerror(errno) : "the file ended early (was it shortened?)");
    }
    got += static_cast<size_t>(r);
  }
  return buf_.data();
}

std::string Reader::read(const Member& m, int64_t n) {
  n = std::min(n, m.size);
  const uint8_t* p = at(m.data_offset, n, "the data of a member");
  return std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n));
}

void Reader::parse_pax(const std::string& records, int64_t offset, std::string* path, int64_t* size,
                       bool* sparse) const {
  size_t pos = 0;
  while (pos < records.size()) {
    if (records[pos] == '\0') break;  // padding after the last record
    // "<length> <key>=<value>\n", the length counting the whole record.
    size_t sp = records.find(' ', pos);
    int64_t len = 0;
    bool ok = sp != std::string::npos && sp > pos && sp - pos <= 12;
    for (size_t i = pos; ok && i < sp; ++i) {
      ok = records[i] >= '0' && records[i] <= '9';
      len = len * 10 + (records[i] - '0');
    }
    ok = ok && len > static_cast<int64_t>(sp - pos + 1) &&
         pos + static_cast<size_t>(len) <= records.size() &&
         records[pos + static_cast<size_t>(len) - 1] == '\n';
    const size_t eq = ok ? records.find('=', sp + 1) : std::string::npos;
    MOKD_CHECK(ok && eq < pos + static_cast<size_t>(len) - 1, "tar ", path_,
               ": malformed pax record in the extended header at byte offset ", offset,
               " (record at byte ", pos, " of its data)");
    const std::string key = records.substr(sp + 1, eq - sp - 1);
    const std::string value = records.substr(eq + 1, pos + static_cast<size_t>(len) - 2 - eq);
    if (key == "path") {
      *path = value;
    } else if (key == "size") {
      int64_t v = 0;
      bool digits = !value.empty() && value.size() <= 17;
      for (char c : value) {
        digits = digits && c >= '0' && c <= '9';
        v = v * 10 + (c - '0');
      }
      MOKD_CHECK(digits, "tar ", path_, ": pax size '", value,
                 "' is not a byte count in the extended header at byte offset ", offset);
      *size = v;
    } else if (key.rfind("GNU.sparse.", 0) == 0) {
      *sparse = true;
    }
    pos += static_cast<size_t>(len);
  }
}

bool Reader::next(Member* m) {
  if (done_) return false;
  std::string long_name, pax_path;
  int64_t pax_size = -1;
  bool pax_sparse = false;
  int64_t extended_at = -1;  // offset of a pending long-name or pax header
  while (true) {
    const int64_t off = pos_;
    if (off == file_size_) {
      MOKD_CHECK(extended_at < 0, "tar ", path_, ": truncated: the extended header at byte offset ",
                 extended_at, " is not followed by a member");
      MOKD_FAIL("tar ", path_, ": truncated: the file ends at byte offset ", off,
                " without the end-of-archive block");
    }
    const uint8_t* h = at(off, kBlock, "a header");
    if (all_zero(h)) {
      MOKD_CHECK(extended_at < 0, "tar ", path_, ": the extended header at byte offset ",
                 extended_at, " is followed by the end of the archive, not by a member");
      done_ = true;
      return false;
    }
    int64_t stored = 0;
    MOKD_CHECK(number(h + 148, 8, &stored), "tar ", path_, ": not a tar header at byte offset ",
               off, " (its checksum field is not a number)");
    int64_t unsigned_sum = 0, signed_sum = 0;
    for (int64_t i = 0; i < kBlock; ++i) {
      const uint8_t b = (i >= 148 && i < 156) ? uint8_t(' ') : h[i];
      unsigned_sum += b;
      signed_sum += static_cast<int8_t>(b);
    }
    MOKD_CHECK(stored == unsigned_sum || stored == signed_sum, "tar ", path_,
               ": header checksum mismatch at byte offset ", off, " (stored ", std::oct, stored,
               ", computed ", unsigned_sum, std::dec,
               ", octal): the file is damaged or not a tar archive");
    const char type = static_cast<char>(h[156]);
    int64_t size = 0;
    MOKD_CHECK(number(h + 124, 12, &size), "tar ", path_,
               ": malformed size field in the header at byte offset ", off);
    const bool posix = std::memcmp(h + 257, "ustar\0", 6) == 0;
    int64_t data = off + kBlock;
    // Extended headers: their data is read here and applies to the next header.
    if (type == 'L' || type == 'K' || type == 'x' || type == 'g') {
      MOKD_CHECK(size <= kMaxExtended, "tar ", path_, ": the extended header at byte offset ", off,
                 " holds ", size, " bytes (more than ", kMaxExtended, ")");
      const uint8_t* p = at(data, size, "an extended header's data");
      const std::string bytes(reinterpret_cast<const char*>(p), static_cast<size_t>(size));
      if (type == 'L') {
        long_name = bytes.substr(0, bytes.find('\0'));
      } else if (type == 'x') {
        parse_pax(bytes, off, &pax_path, &pax_size, &pax_sparse);
      } else if (type == 'g') {
        std::string ignored_path;
        int64_t ignored_size = -1;
        bool ignored_sparse = false;
        parse_pax(bytes, off, &ignored_path, &ignored_size, &ignored_sparse);
      }
      if (type != 'g') extended_at = off;
      pos_ = data + padded(size);
      continue;
    }
    if (pax_size >= 0) size = pax_size;
    m->type = type;
    m->sparse = pax_sparse || type == 'S';
    if (type == 'S') {  // old GNU sparse: extension blocks follow while the flag is set
      bool extended = h[482] != 0;
      while (extended) {
        const uint8_t* e = at(data, kBlock, "a sparse extension block");
        extended = e[504] != 0;
        data += kBlock;
      }
    }
    if (!pax_path.empty())
      m->name = pax_path;
    else if (!long_name.empty())
      m->name = long_name;
    else {
      m->name = field(h, 100);
      const std::string prefix = posix ? field(h + 345, 155) : "";
      if (!prefix.empty()) m->name = prefix + "/" + m->name;
    }
    m->header_offset = off;
    m->data_offset = data;
    m->size = size;
    // Links, folders and devices have no data whatever their size field says.
    const bool has_data =
        type != '1' && type != '2' && type != '3' && type != '4' && type != '5' && type != '6';
    if (!has_data) m->size = 0;
    MOKD_CHECK(m->size <= kMaxSize && data + m->size <= file_size_, "tar ", path_,
               ": truncated: member '", m->name, "' (header at byte offset ", off,
               ") needs data up to byte ", data + m->size, ", the file ends at byte ", file_size_);
    pos_ = data + padded(m->size);
    return true;
  }
}

}  // namespace mokd::data::tar
