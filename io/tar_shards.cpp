// Tar shards in the WebDataset layout (open_tar_shards in io/dataset.h): one pass over each
// shard's headers (io/tar.h) finds every sample's image (shard, data offset, size) and reads its
// label; fetch() then preads the image bytes from the shard's open descriptor. The offsets are
// kept in an index file (io/index_cache.h) and a shard is read again only when its size or
// modification time moved.
//
// Index body, one record per line:
//   dir <absolute folder of the shards>
//   pattern <the spec's file name part: "*.tar" for a folder>
//   shard <size> <mtime ns, -1 = unconfirmed> <number of samples> <shard file name>
//   <image data offset> <image size> <label> <image member name>    (that many lines)
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "engine/error.h"
#include "io/dataset.h"
#include "io/index_cache.h"
#include "io/sha256.h"
#include "io/tar.h"

namespace mokd::data {

namespace fs = std::filesystem;
namespace ic = index_cache;

namespace {

constexpr const char* kMagic = "mokd tar-shards index 1";
constexpr int64_t kMaxCls = 64;  // a .cls member larger than this is not a class index

struct Entry {
  int64_t offset = 0, size = 0, label = 0;
  std::string member;
};

// One shard and its open descriptor (closed with it).
struct Shard {
  std::string path, name;
  int fd = -1;
  int64_t size = 0, mtime = 0;
  int64_t settled = -1;  // mtime as an index may record it (ic::settled)
  Shard(std::string p, std::string n) : path(std::move(p)), name(std::move(n)) {}
  Shard(Shard&& o) noexcept
      : path(std::move(o.path)),
        name(std::move(o.name)),
        fd(std::exchange(o.fd, -1)),
        size(o.size),
        mtime(o.mtime),
        settled(o.settled) {}
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;
  Shard& operator=(Shard&&) = delete;
  ~Shard() {
    if (fd >= 0) ::close(fd);
  }
};

// Expands brace groups in a file name: "{000..012}" (numbers; zero-padded bounds keep their
// width), "{a,b}" (alternatives); several groups combine left to right.
std::vector<std::string> expand_braces(const std::string& name, const std::string& spec) {
  const size_t open = name.find('{');
  if (open == std::string::npos) {
    MOKD_CHECK(name.find('}') == std::string::npos, "tar shards ", spec, ": unmatched '}'");
    return {name};
  }
  const size_t close = name.find('}', open);
  MOKD_CHECK(close != std::string::npos, "tar shards ", spec, ": unmatched '{'");
  const std::string inner = name.substr(open + 1, close - open - 1);
  MOKD_CHECK(inner.find('{') == std::string::npos, "tar shards ", spec,
             ": nested brace groups are not supported");
  std::vector<std::string> options;
  const size_t dots = inner.find("..");
  if (dots != std::string::npos) {
    const std::string a = inner.substr(0, dots), b = inner.substr(dots + 2);
    auto digits = [](const std::string& s) {
      return !s.empty() && s.size() <= 12 &&
             std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
    };
    MOKD_CHECK(digits(a) && digits(b), "tar shards ", spec, ": brace range {", inner,
               "} is not {first..last} with non-negative integers");
    const int64_t lo = std::stoll(a), hi = std::stoll(b);
    const bool padded = (a.size() > 1 && a[0] == '0') || (b.size() > 1 && b[0] == '0');
    const size_t width = padded ? std::max(a.size(), b.size()) : 0;
    MOKD_CHECK(std::abs(hi - lo) < 10'000'000, "tar shards ", spec, ": brace range {", inner,
               "} names more than 10 million shards");
    for (int64_t v = lo;; v += hi >= lo ? 1 : -1) {
      std::string s = std::to_string(v);
      if (s.size() < width) s.insert(0, width - s.size(), '0');
      options.push_back(s);
      if (v == hi) break;
    }
  } else {
    size_t start = 0;
    while (true) {
      const size_t comma = inner.find(',', start);
      options.push_back(inner.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  // Left to right: the first group varies slowest.
  const std::vector<std::string> rests = expand_braces(name.substr(close + 1), spec);
  std::vector<std::string> out;
  out.reserve(options.size() * rests.size());
  for (const std::string& o : options)
    for (const std::string& rest : rests) out.push_back(name.substr(0, open) + o + rest);
  return out;
}

// A member's bytes shown in a message: printable ASCII kept, the rest escaped, cut to 24.
std::string shown(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 24; ++i) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return s.size() > 24 ? out + "..." : out;
}

// A .cls member's text as a class index: decimal digits, optionally surrounded by white space.
bool parse_label(const std::string& text, int64_t* label) {
  size_t a = 0, b = text.size();
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  while (a < b && space(text[a])) ++a;
  while (b > a && space(text[b - 1])) --b;
  if (b == a || b - a > 18) return false;
  int64_t v = 0;
  for (size_t i = a; i < b; ++i) {
    if (text[i] < '0' || text[i] > '9') return false;
    v = v * 10 + (text[i] - '0');
  }
  *label = v;
  return true;
}

// The samples of one shard, in tar order: runs of consecutive members sharing a key.
std::vector<Entry> index_shard(const Shard& sh) {
  tar::Reader reader(sh.fd, sh.path, sh.size);
  std::vector<Entry> out;
  struct Group {
    std::string key;
    bool active = false;
    tar::Member image, cls;
    bool has_image = false, has_cls = false;
    int64_t label = 0;
  } g;
  auto flush = [&] {
    if (g.has_image && !g.has_cls)
      MOKD_FAIL("tar shard ", sh.path, ": image '", g.image.name, "' (header at byte offset ",
                g.image.header_offset, ") has no label member '", g.key, ".cls'");
    if (g.has_cls && !g.has_image)
      MOKD_FAIL("tar shard ", sh.path, ": sample '", g.key, "' ('", g.cls.name,
                "', header at byte offset ", g.cls.header_offset,
                ") has no image ('.jpg', '.jpeg' or '.png' member)");
    if (g.has_image) out.push_back({g.image.data_offset, g.image.size, g.label, g.image.name});
    g = Group{};
  };
  tar::Member m;
  while (reader.next(&m)) {
    if (!m.regular()) continue;
    // WebDataset's key: the folders and the last component up to its first '.', which must not
    // be its first character (names without such a key, e.g. "README" or "._x.jpg", are skipped).
    const size_t slash = m.name.rfind('/');
    const size_t start = slash == std::string::npos ? 0 : slash + 1;
    const size_t dot = m.name.find('.', start);
    if (dot == std::string::npos || dot == start) continue;
    const std::string key = m.name.substr(0, dot);
    std::string ext = m.name.substr(dot + 1);
    std::transform(ext.begin(), ext.end(), ext.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (g.active && key != g.key) flush();
    g.active = true;
    g.key = key;
    if (ext == "jpg" || ext == "jpeg" || ext == "png") {
      MOKD_CHECK(!g.has_image, "tar shard ", sh.path, ": sample '", key, "' has two images, '",
                 g.image.name, "' and '", m.name, "' (header at byte offset ", m.header_offset,
                 ")");
      g.image = m;
      g.has_image = true;
    } else if (ext == "cls") {
      MOKD_CHECK(!g.has_cls, "tar shard ", sh.path, ": sample '", key, "' has a second '", m.name,
                 "' (header at byte offset ", m.header_offset, ")");
      const std::string text = reader.read(m, kMaxCls + 1);
      MOKD_CHECK(m.size <= kMaxCls && parse_label(text, &g.label), "tar shard ", sh.path, ": '",
                 m.name, "' (header at byte offset ", m.header_offset, ") holds '", shown(text),
                 "', not a non-negative class index in decimal");
      g.cls = m;
      g.has_cls = true;
    }
  }
  if (g.active) flush();
  return out;
}

struct IndexedShard {
  int64_t size = 0, mtime = -1;
  std::vector<Entry> entries;
};

// An index body: the shards it records by file name, the folder it was written for. false (and
// *why) when it is not well formed or for another pattern.
bool parse_index(std::string_view body, const std::string& pattern, std::string* dir,
                 std::map<std::string, IndexedShard>* out, std::string* why) {
  size_t pos = 0;
  std::string_view line;
  if (!ic::next_line(body, &pos, &line) || line.substr(0, 4) != "dir ") {
    *why = "no dir line";
    return false;
  }
  *dir = std::string(line.substr(4));
  if (!ic::next_line(body, &pos, &line) || line != "pattern " + pattern) {
    *why = "it is not for the pattern " + pattern;
    return false;
  }
  while (ic::next_line(body, &pos, &line)) {
    // shard <size> <mtime> <n> <name>
    std::string_view f[4];
    std::string_view rest = line;
    for (int i = 0; i < 4; ++i) {
      const size_t sp = rest.find(' ');
      if (sp == std::string_view::npos) {
        *why = "a shard line is not 'shard <size> <mtime> <count> <name>'";
        return false;
      }
      f[i] = rest.substr(0, sp);
      rest = rest.substr(sp + 1);
    }
    IndexedShard s;
    int64_t n = 0;
    if (f[0] != "shard" || !ic::parse_i64(f[1], &s.size) || !ic::parse_i64(f[2], &s.mtime) ||
        !ic::parse_i64(f[3], &n) || n < 0 || rest.empty()) {
      *why = "a shard line is not 'shard <size> <mtime> <count> <name>'";
      return false;
    }
    const std::string name(rest);
    s.entries.resize(static_cast<size_t>(std::min<int64_t>(n, 1 << 24)));
    for (int64_t i = 0; i < n; ++i) {
      std::string_view g[3];
      bool ok = ic::next_line(body, &pos, &line);
      rest = line;
      for (int k = 0; ok && k < 3; ++k) {
        const size_t sp = rest.find(' ');
        ok = sp != std::string_view::npos;
        if (ok) {
          g[k] = rest.substr(0, sp);
          rest = rest.substr(sp + 1);
        }
      }
      if (static_cast<size_t>(i) >= s.entries.size()) s.entries.emplace_back();
      Entry& e = s.entries[static_cast<size_t>(i)];
      ok = ok && ic::parse_i64(g[0], &e.offset) && ic::parse_i64(g[1], &e.size) &&
           ic::parse_i64(g[2], &e.label) && !rest.empty() && e.offset >= 0 && e.size >= 0 &&
           e.label >= 0 && e.offset <= s.size - e.size;
      if (!ok) {
        *why = "entry " + std::to_string(i) + " of shard " + name +
               " is not '<offset> <size> <label> <member>' within the shard";
        return false;
      }
      e.member = std::string(rest);
    }
    if (!out->emplace(name, std::move(s)).second) {
      *why = "shard " + name + " is listed twice";
      return false;
    }
  }
  return true;
}

std::string plural(int64_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

// Room for one descriptor per shard: raises the soft limit on open files towards the hard one
// when the shards would not fit.
void make_room_for_files(size_t shards) {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  const rlim_t want = static_cast<rlim_t>(shards) + 256;
  if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

class TarShards final : public Dataset {
 public:
  TarShards(const std::string& spec, const TarShardsOptions& opt) : spec_(spec) {
    resolve();
    make_room_for_files(shards_.size());
    for (Shard& sh : shards_) {
      const int64_t checked_at = ic::now_ns();
      sh.fd = ::open(sh.path.c_str(), O_RDONLY | O_CLOEXEC);
      if (sh.fd < 0) {
        const int err = errno;
        struct rlimit rl {};
        ::getrlimit(RLIMIT_NOFILE, &rl);
        MOKD_FAIL("tar shard ", sh.path, ": cannot open: ", std::strerror(err),
                  err == EMFILE ? " (" + std::to_string(shards_.size()) +
                                      " shards, the limit on open files is " +
                                      std::to_string(rl.rlim_cur) + ")"
                                : std::string());
      }
      struct stat st;
      MOKD_CHECK(::fstat(sh.fd, &st) == 0 && S_ISREG(st.st_mode), "tar shard ", sh.path,
                 ": not a regular file");
      sh.size = static_cast<int64_t>(st.st_size);
      sh.mtime = static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
      sh.settled = ic::settled(sh.mtime, checked_at);
    }
    IndexReport report;
    build(opt.index_cache, &report);
    if (opt.report) *opt.report = report;
    read_class_names();
    MOKD_CHECK(!samples_.empty(), "tar shards ", spec_, ": no samples (key.jpg|jpeg|png with ",
               "key.cls) in ", plural(static_cast<int64_t>(shards_.size()), "shard"));
  }
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  int64_t height() const override { return 0; }  // files of any size
  int64_t width() const override { return 0; }
  int64_t channels() const override { return 3; }
  int64_t num_classes() const override { return static_cast<int64_t>(names_.size()); }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string location() const override { return spec_; }
  std::string source(int64_t index) const override {
    if (index < 0 || index >= size()) return spec_ + "[" + std::to_string(index) + "]";
    const Sample& s = samples_[static_cast<size_t>(index)];
    return shards_[s.shard].path + ":" + s.entry.member;
  }

  void fetch(int64_t index, RawSample* out) const override {
    MOKD_CHECK(index >= 0 && index < size(), "tar shards ", spec_, ": index ", index,
               " outside [0, ", size(), ")");
    const Sample& s = samples_[static_cast<size_t>(index)];
    const Shard& sh = shards_[s.shard];
    out->bytes.resize(static_cast<size_t>(s.entry.size));
    size_t got = 0;
    while (got < out->bytes.size()) {
      const ssize_t r = ::pread(sh.fd, out->bytes.data() + got, out->bytes.size() - got,
                                static_cast<off_t>(s.entry.offset + static_cast<int64_t>(got)));
      if (r < 0 && errno == EINTR) continue;
      MOKD_CHECK(
          r > 0, "tar shard ", sh.path, ": read ", got, " of the ", s.entry.size, " bytes of '",
          s.entry.member, "' at byte offset ", s.entry.offset, ": ",
          r < 0 ? std::strerror(errno) : "the shard ends early (it changed after it was indexed)");
      got += static_cast<size_t>(r);
    }
    out->encoded = true;
    out->height = out->width = out->channels = 0;
    out->label = s.entry.label;
  }

 private:
  struct Sample {
    size_t shard;
    Entry entry;
  };

  // The shards the spec names, and the folder and file name pattern the index is kept for.
  void resolve() {
    MOKD_CHECK(!spec_.empty(), "tar shards: empty spec; expected a folder of .tar shards, a .tar ",
               "file or a pattern such as train-{000000..000146}.tar");
    std::vector<std::string> names;
    if (fs::is_directory(spec_)) {
      dir_ = spec_;
      pattern_ = "*.tar";
      for (const auto& e : fs::directory_iterator(spec_)) {
        const std::string n = e.path().filename().string();
        if (e.is_regular_file() && n.size() > 4 && n.compare(n.size() - 4, 4, ".tar") == 0)
          names.push_back(n);
      }
      std::sort(names.begin(), names.end());
      MOKD_CHECK(!names.empty(), "tar shards ", spec_, ": the folder holds no .tar files");
    } else {
      const fs::path p(spec_);
      dir_ = p.has_parent_path() ? p.parent_path().string() : ".";
      pattern_ = p.filename().string();
      MOKD_CHECK(dir_.find_first_of("{}") == std::string::npos, "tar shards ", spec_,
                 ": brace groups are expanded in the file name only");
      MOKD_CHECK(!pattern_.empty(), "tar shards ", spec_, ": no file name");
      names = expand_braces(pattern_, spec_);
      const bool single = names.size() == 1 && pattern_.find('{') == std::string::npos;
      for (const std::string& n : names) {
        const std::string path = (fs::path(dir_) / n).string();
        MOKD_CHECK(fs::is_regular_file(path), "tar shards ", spec_, ": ",
                   single ? "not found; expected a folder of .tar shards, a .tar file or a "
                            "pattern such as train-{000000..000146}.tar"
                          : "shard " + path + " not found");
      }
    }
    shards_.reserve(names.size());
    for (const std::string& n : names) shards_.emplace_back((fs::path(dir_) / n).string(), n);
  }

  // Fills samples_: from an index whose shards are unchanged, or by reading the shards.
  void build(bool use_index, IndexReport* report) {
    const std::string abs_dir = fs::absolute(dir_).lexically_normal().string();
    const std::string beside =
        (fs::path(dir_) / (".mokd_tar_index-" + sha256_hex(pattern_).substr(0, 12))).string();
    const std::string fallback =
        use_index ? ic::user_cache_path("tar-shards", abs_dir + "/" + pattern_) : "";
    std::map<std::string, IndexedShard> known;
    std::string problem;
    bool have_known = false;
    for (const std::string& path : {beside, fallback}) {
      if (!use_index || path.empty()) continue;
      std::string body, why, dir;
      std::map<std::string, IndexedShard> entries;
      const ic::ReadStatus st = ic::read(path, kMagic, &body, &why);
      if (st == ic::ReadStatus::kMissing) continue;
      if (st == ic::ReadStatus::kOk && parse_index(body, pattern_, &dir, &entries, &why) &&
          path == fallback && dir != abs_dir)
        why = "it was written for " + dir;
      if (!why.empty()) {
        if (problem.empty()) problem = "index " + path + " is damaged (" + why + ")";
        continue;
      }
      int64_t changed = 0, unconfirmed = 0, present = 0;
      for (const Shard& sh : shards_) {
        auto it = entries.find(sh.name);
        if (it == entries.end()) {
          ++changed;
          continue;
        }
        ++present;
        if (it->second.mtime < 0)
          ++unconfirmed;
        else if (it->second.size != sh.size || it->second.mtime != sh.mtime)
          ++changed;
      }
      changed += static_cast<int64_t>(entries.size()) - present;
      if (changed == 0 && unconfirmed == 0) {
        assemble(&entries, report);
        report->path = path;
        return;
      }
      if (have_known) continue;
      known = std::move(entries);
      have_known = true;
      if (changed > 0 && problem.empty())
        problem = "index " + path + " is out of date (" + plural(changed, "shard") +
                  " changed, added or removed)";
    }
    assemble(&known, report);
    if (!use_index) return;
    std::string body = "dir " + abs_dir + "\npattern " + pattern_ + "\n";
    bool writable =
        pattern_.find('\n') == std::string::npos && abs_dir.find('\n') == std::string::npos;
    size_t k = 0;
    for (size_t si = 0; si < shards_.size(); ++si) {
      const Shard& sh = shards_[si];
      const size_t begin = k;
      while (k < samples_.size() && samples_[k].shard == si) ++k;
      body += "shard " + std::to_string(sh.size) + " " + std::to_string(sh.settled) + " " +
              std::to_string(k - begin) + " " + sh.name + "\n";
      writable = writable && sh.name.find('\n') == std::string::npos;
      for (size_t j = begin; j < k; ++j) {
        const Entry& e = samples_[j].entry;
        writable = writable && e.member.find('\n') == std::string::npos;
        body += std::to_string(e.offset) + " " + std::to_string(e.size) + " " +
                std::to_string(e.label) + " " + e.member + "\n";
      }
    }
    std::string why = "a member name holds a line break";
    const std::string written = writable ? ic::store(beside, fallback, kMagic, body, &why) : "";
    report->path = written;
    report->written = !written.empty();
    if (!problem.empty())
      std::fprintf(stderr, "tar shards %s: %s; read %lld of %zu shards again\n", spec_.c_str(),
                   problem.c_str(), static_cast<long long>(report->listed), shards_.size());
    if (written.empty())
      std::fprintf(stderr, "tar shards %s: offsets not saved as an index (%s)\n", spec_.c_str(),
                   why.c_str());
  }

  // samples_ from the unchanged shards of `known` (entries moved out), reading the others.
  void assemble(std::map<std::string, IndexedShard>* known, IndexReport* report) {
    for (size_t si = 0; si < shards_.size(); ++si) {
      const Shard& sh = shards_[si];
      auto it = known->find(sh.name);
      std::vector<Entry> entries;
      if (it != known->end() && it->second.mtime >= 0 && it->second.size == sh.size &&
          it->second.mtime == sh.mtime) {
        entries = std::move(it->second.entries);
        ++report->reused;
      } else {
        entries = index_shard(sh);
        ++report->listed;
      }
      for (Entry& e : entries) samples_.push_back({si, std::move(e)});
    }
  }

  // classes.txt beside the shards (one name per line), else "0" .. max label.
  void read_class_names() {
    const std::string path = (fs::path(dir_) / "classes.txt").string();
    int64_t max_label = -1;
    for (const Sample& s : samples_) max_label = std::max(max_label, s.entry.label);
    if (!fs::exists(path)) {
      for (int64_t i = 0; i <= max_label; ++i) names_.push_back(std::to_string(i));
      return;
    }
    std::ifstream in(path);
    MOKD_CHECK(in, path, ": cannot open for reading");
    std::string line;
    for (int64_t line_no = 1; std::getline(in, line); ++line_no) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      MOKD_CHECK(!line.empty(), path, ": line ", line_no,
                 " is empty; expected one class name a line");
      names_.push_back(line);
    }
    MOKD_CHECK(!names_.empty(), path, ": no class names");
    for (const Sample& s : samples_)
      MOKD_CHECK(s.entry.label < num_classes(), "tar shard ", shards_[s.shard].path, ": '",
                 s.entry.member, "' has label ", s.entry.label, ", but ", path, " names ",
                 plural(num_classes(), "class name"));
  }

  std::string spec_, dir_, pattern_;
  std::vector<Shard> shards_;
  std::vector<Sample> samples_;
  std::vector<std::string> names_;
};

}  // namespace

std::unique_ptr<Dataset> open_tar_shards(const std::string& spec, const TarShardsOptions& options) {
  return std::make_unique<TarShards>(spec, options);
}

}  // namespace mokd::data
