// safetensors reader (memory-mapped, strictly validated) and atomic writer.
#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <vector>

#include "engine/bf16.h"
#include "engine/error.h"

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; the reader copies bytes as they are");

namespace mokd::io {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;  // same limit as the reference reader
constexpr int kMaxJsonDepth = 8;                            // a valid header needs 3

enum class FileDType { F64, F32, F16, BF16, I64, I32 };

struct FileDTypeInfo {
  const char* name;
  FileDType code;
  size_t size;
};
constexpr FileDTypeInfo kFileDTypes[] = {
    {"F64", FileDType::F64, 8},   {"F32", FileDType::F32, 4}, {"F16", FileDType::F16, 2},
    {"BF16", FileDType::BF16, 2}, {"I64", FileDType::I64, 8}, {"I32", FileDType::I32, 4},
};
// Valid safetensors dtypes that mokd has no tensor type for: named as unsupported, not unknown.
constexpr const char* kUnsupportedDTypes[] = {"BOOL", "U8",      "I8",      "U16",     "I16",
                                              "U32",  "U64",     "F8_E4M3", "F8_E5M2", "F8_E8M0",
                                              "F4",   "F6_E2M3", "F6_E3M2", "C64"};

struct Entry {
  std::string name;
  FileDTypeInfo dt;
  Shape shape;
  uint64_t numel = 0;
  uint64_t begin = 0, end = 0;
};

struct Header {
  std::vector<Entry> entries;  // in name order
  Metadata metadata;
  const uint8_t* data = nullptr;  // start of the data buffer
};

using json = nlohmann::json;

std::string type_of(const json& j) {
  if (j.is_number_float()) return "a non-integer number";
  if (j.is_number_integer() && !j.is_number_unsigned()) return "a negative integer";
  return std::string("a JSON ") + j.type_name();
}

// A non-negative JSON integer; anything else (negative, fractional, too big, other type) throws.
uint64_t as_u64(const json& j, const std::string& where) {
  MOKD_CHECK(j.is_number_unsigned(), where, " must be a non-negative integer, got ", type_of(j),
             " (", j.dump(), ")");
  return j.get<uint64_t>();
}

Entry parse_entry(const std::string& file, const std::string& name, const json& v) {
  const std::string where = "safetensors " + file + ": tensor '" + name + "'";
  MOKD_CHECK(v.is_object(), where, ": entry must be a JSON object, got ", type_of(v));
  // Other keys are ignored, as the reference reader does.
  for (const char* key : {"dtype", "shape", "data_offsets"})
    MOKD_CHECK(v.contains(key), where, ": entry has no \"", key, "\"");
  Entry e;
  e.name = name;

  const json& dt = v["dtype"];
  MOKD_CHECK(dt.is_string(), where, ": \"dtype\" must be a string, got ", type_of(dt));
  const std::string dts = dt.get<std::string>();
  bool found = false;
  for (const FileDTypeInfo& info : kFileDTypes)
    if (dts == info.name) e.dt = info, found = true;
  if (!found) {
    for (const char* u : kUnsupportedDTypes)
      MOKD_CHECK(dts != u, where, ": dtype ", dts,
                 " is not supported (mokd reads F32, BF16, F16, F64, I32, I64)");
    MOKD_FAIL(where, ": unknown dtype \"", dts, "\"");
  }

  const json& sh = v["shape"];
  MOKD_CHECK(sh.is_array(), where, ": \"shape\" must be an array, got ", type_of(sh));
  // Zero-sized dims make numel 0, but the other dims must still multiply without overflow: strides
  // are products of trailing dims and are computed in int64 later.
  uint64_t nonzero = 1;
  bool empty = false;
  for (size_t i = 0; i < sh.size(); ++i) {
    uint64_t d = as_u64(sh[i], where + ": shape[" + std::to_string(i) + "]");
    MOKD_CHECK(d <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), where, ": shape[",
               i, "] = ", d, " is too large");
    MOKD_CHECK(!__builtin_mul_overflow(nonzero, std::max<uint64_t>(d, 1), &nonzero), where,
               ": shape ", sh.dump(), " has more elements than fit in 64 bits");
    empty = empty || d == 0;
    e.shape.push_back(static_cast<int64_t>(d));
  }
  MOKD_CHECK(nonzero <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), where,
             ": shape ", sh.dump(), " is too large");
  const uint64_t numel = empty ? 0 : nonzero;
  e.numel = numel;
  uint64_t nbytes = 0;
  MOKD_CHECK(!__builtin_mul_overflow(numel, static_cast<uint64_t>(e.dt.size), &nbytes), where,
             ": shape ", sh.dump(), " of ", dts, " overflows 64-bit byte counts");

  const json& off = v["data_offsets"];
  MOKD_CHECK(off.is_array() && off.size() == 2, where,
             ": \"data_offsets\" must be an array [begin, end], got ", off.dump());
  e.begin = as_u64(off[0], where + ": data_offsets[0]");
  e.end = as_u64(off[1], where + ": data_offsets[1]");
  MOKD_CHECK(e.begin <= e.end, where, ": data_offsets [", e.begin, ", ", e.end,
             "] has begin > end");
  MOKD_CHECK(e.end - e.begin == nbytes, where, ": data_offsets [", e.begin, ", ", e.end, "] span ",
             e.end - e.begin, " bytes but shape ", sh.dump(), " of ", dts, " needs ", nbytes);
  return e;
}

// Parses and validates the header of a whole file image `base[0, size)`.
Header parse_header(const uint8_t* base, size_t size, const std::string& file) {
  const std::string where = "safetensors " + file;
  MOKD_CHECK(size >= 8, where, ": file is ", size, " bytes, shorter than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];
  MOKD_CHECK(n <= kMaxHeaderBytes, where, ": header length ", n, " exceeds the ", kMaxHeaderBytes,
             "-byte limit");
  MOKD_CHECK(n <= size - 8, where, ": header length ", n, " runs past the end of the ", size,
             "-byte file");

  // nlohmann stops at a NUL byte as if the input ended there, which would hide whatever follows it.
  MOKD_CHECK(std::memchr(base + 8, 0, n) == nullptr, where,
             ": header is not valid JSON: it contains a NUL byte");

  // Duplicate keys (nlohmann keeps the last silently) and absurd nesting are rejected while
  // parsing.
  std::vector<std::set<std::string>> keys;
  auto cb = [&](int depth, json::parse_event_t ev, json& parsed) -> bool {
    if (depth > kMaxJsonDepth)
      MOKD_FAIL(where, ": header JSON nests deeper than ", kMaxJsonDepth, " levels");
    if (ev == json::parse_event_t::object_start) {
      keys.emplace_back();
    } else if (ev == json::parse_event_t::object_end) {
      keys.pop_back();
    } else if (ev == json::parse_event_t::key) {
      const std::string& k = parsed.get_ref<const std::string&>();
      if (!keys.back().insert(k).second) {
        if (keys.size() == 1) MOKD_FAIL(where, ": duplicate tensor name '", k, "' in the header");
        MOKD_FAIL(where, ": duplicate key \"", k, "\" in the header");
      }
    }
    return true;
  };
  json h;
  try {
    h = json::parse(base + 8, base + 8 + n, cb);
  } catch (const json::exception& e) {
    MOKD_FAIL(where, ": header is not valid JSON: ", e.what());
  }
  MOKD_CHECK(h.is_object(), where, ": header must be a JSON object, got ", type_of(h));

  Header out;
  out.data = base + 8 + n;
  const uint64_t buffer = size - 8 - n;
  for (auto it = h.begin(); it != h.end(); ++it) {  // json objects iterate in key order
    if (it.key() == "__metadata__") {
      MOKD_CHECK(it->is_object(), where, ": __metadata__ must be an object, got ", type_of(*it));
      for (auto m = it->begin(); m != it->end(); ++m) {
        MOKD_CHECK(m->is_string(), where, ": __metadata__ value of \"", m.key(),
                   "\" must be a string, got ", type_of(*m));
        out.metadata[m.key()] = m->get<std::string>();
      }
      continue;
    }
    out.entries.push_back(parse_entry(file, it.key(), *it));
  }

  // The ranges must tile [0, buffer) exactly: in bounds, no overlap, no hole, nothing after.
  std::vector<const Entry*> order;
  for (const Entry& e : out.entries) {
    MOKD_CHECK(e.end <= buffer, where, ": tensor '", e.name, "': data_offsets [", e.begin, ", ",
               e.end, "] run past the end of the ", buffer, "-byte data buffer");
    order.push_back(&e);
  }
  std::sort(order.begin(), order.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t pos = 0;
  const Entry* prev = nullptr;
  for (const Entry* e : order) {
    if (e->begin < pos)
      MOKD_FAIL(where, ": tensors '", prev->name, "' [", prev->begin, ", ", prev->end, ") and '",
                e->name, "' [", e->begin, ", ", e->end, ") overlap");
    if (e->begin > pos) {
      if (prev)
        MOKD_FAIL(where, ": ", e->begin - pos, "-byte gap in the data buffer between tensor '",
                  prev->name, "' (ends at ", pos, ") and tensor '", e->name, "' (starts at ",
                  e->begin, ")");
      MOKD_FAIL(where, ": ", e->begin, "-byte gap at the start of the data buffer before tensor '",
                e->name, "'");
    }
    pos = e->end;
    prev = e;
  }
  MOKD_CHECK(pos == buffer, where, ": data buffer has ", buffer - pos,
             " bytes after the last tensor", prev ? " ('" + prev->name + "')" : std::string(),
             " that no tensor covers");
  return out;
}

float f16_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1f) {
    u = sign | 0x7f800000u |
        (man << 13);  // inf, or NaN with its payload (quiet bit maps to quiet bit)
  } else if (exp != 0) {
    u = sign | ((exp + 112) << 23) | (man << 13);  // rebias 15 -> 127
  } else if (man == 0) {
    u = sign;
  } else {
    // Subnormal m * 2^-24: shift the leading one into the implicit bit position.
    int s = 0;
    while (!(man & 0x400u)) man <<= 1, ++s;
    u = sign | (static_cast<uint32_t>(113 - s) << 23) | ((man & 0x3ffu) << 13);
  }
  return std::bit_cast<float>(u);
}

template <class T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));  // the buffer need not be aligned
  return v;
}

// The exact value of element i of a floating source.
double source_value(const uint8_t* src, FileDType dt, size_t i) {
  switch (dt) {
    case FileDType::F64:
      return load_le<double>(src + 8 * i);
    case FileDType::F32:
      return load_le<float>(src + 4 * i);
    case FileDType::F16:
      return f16_to_float(load_le<uint16_t>(src + 2 * i));
    case FileDType::BF16:
      return bf16_to_float(bf16{load_le<uint16_t>(src + 2 * i)});
    default:
      return 0;
  }
}

double widen(float v) { return v; }
double widen(double v) { return v; }
double widen(bf16 v) { return bf16_to_float(v); }

template <class Dst, class Store>
void convert(const uint8_t* src, const Entry& e, Dst* dst, bool check, const std::string& where,
             const char* to, Store store) {
  for (uint64_t i = 0; i < e.numel; ++i) {
    double v = source_value(src, e.dt.code, i);
    dst[i] = store(v);
    if (check && !std::isfinite(widen(dst[i]))) {
      if (!std::isfinite(v))
        MOKD_FAIL(where, ": non-finite value ", v, " at flat index ", i,
                  ": weights and checkpoints must hold finite values (the run that wrote this "
                  "file may have diverged)");
      MOKD_FAIL(where, ": value ", v, " at flat index ", i, " overflows ", to);
    }
  }
}

Tensor load_entry(const Header& h, const Entry& e, const LoadOptions& opts,
                  const std::string& file) {
  const std::string where = "safetensors " + file + ": tensor '" + e.name + "'";
  const uint8_t* src = h.data + e.begin;
  const bool integer = e.dt.code == FileDType::I64 || e.dt.code == FileDType::I32;
  DType target =
      integer ? (e.dt.code == FileDType::I64 ? DType::I64 : DType::I32) : opts.float_dtype;
  Tensor t = Tensor::empty(e.shape, target, Device::cpu());
  if (e.numel == 0) return t;
  const bool check = !opts.allow_non_finite;
  if (integer) {
    std::memcpy(t.raw_data(), src, e.end - e.begin);
  } else if (target == DType::F32) {
    convert(src, e, t.data<float>(), check, where, "f32",
            [](double v) { return static_cast<float>(v); });
  } else if (target == DType::F64) {
    convert(src, e, t.data<double>(), check, where, "f64", [](double v) { return v; });
  } else {
    // double -> float -> bf16, as torch does; exact for every source but F64.
    convert(src, e, t.data<bf16>(), check, where, "bf16",
            [](double v) { return float_to_bf16(static_cast<float>(v)); });
  }
  return t;
}

// A read-only mapping of a whole file; unmapped on scope exit.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    const std::string where = "safetensors " + path;
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    MOKD_CHECK(fd >= 0, where, ": cannot open: ", std::strerror(errno));
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      int err = errno;
      ::close(fd);
      MOKD_FAIL(where, ": cannot stat: ", std::strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      MOKD_FAIL(where, ": not a regular file");
    }
    size_ = static_cast<size_t>(st.st_size);
    if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      int err = errno;
      ::close(fd);
      MOKD_CHECK(p != MAP_FAILED, where, ": mmap of ", size_,
                 " bytes failed: ", std::strerror(err));
      data_ = static_cast<const uint8_t*>(p);
    } else {
      ::close(fd);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

const char* file_dtype_name(DType t) {
  switch (t) {
    case DType::F32:
      return "F32";
    case DType::BF16:
      return "BF16";
    case DType::F64:
      return "F64";
    case DType::I32:
      return "I32";
    case DType::I64:
      return "I64";
    case DType::U8:
      return "U8";
  }
  return "?";
}

void write_all(int fd, const void* p, size_t n, const std::string& tmp) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0 && errno == EINTR) continue;
    MOKD_CHECK(w > 0, "save_safetensors: writing ", tmp, " failed: ", std::strerror(errno));
    c += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

TensorMap load_safetensors_bytes(const void* data, size_t size, const std::string& source,
                                 const LoadOptions& opts, Metadata* metadata) {
  MOKD_CHECK(is_floating(opts.float_dtype), "safetensors ", source,
             ": LoadOptions::float_dtype must be f32, bf16 or f64, got ",
             dtype_name(opts.float_dtype));
  const uint8_t* base = static_cast<const uint8_t*>(data);
  Header h = parse_header(base, size, source);
  TensorMap out;
  for (const Entry& e : h.entries) {
    Tensor t = load_entry(h, e, opts, source);
    out.emplace(e.name, opts.device.is_cpu() ? t : t.to(opts.device));
  }
  if (metadata) *metadata = std::move(h.metadata);
  return out;
}

TensorMap load_safetensors(const std::string& path, const LoadOptions& opts, Metadata* metadata) {
  MappedFile f(path);
  return load_safetensors_bytes(f.data(), f.size(), path, opts, metadata);
}

std::map<std::string, TensorEntry> inspect_safetensors(const std::string& path,
                                                       Metadata* metadata) {
  MappedFile f(path);
  Header h = parse_header(f.data(), f.size(), path);
  std::map<std::string, TensorEntry> out;
  for (const Entry& e : h.entries) out[e.name] = TensorEntry{e.dt.name, e.shape, e.begin, e.end};
  if (metadata) *metadata = std::move(h.metadata);
  return out;
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  save_safetensors(path, tensors, U8Map{}, metadata);
}

void save_safetensors(const std::string& path, const TensorMap& tensors, const U8Map& u8,
                      const Metadata& metadata) {
  // Host, contiguous copies of the tensors, and one entry per tensor or array in name order.
  struct Out {
    const char* dtype;
    Shape shape;
    const void* data;
    size_t nbytes;
  };
  std::vector<Tensor> host;
  host.reserve(tensors.size());
  std::map<std::string, Out> outs;
  for (const auto& [name, t] : tensors) {
    MOKD_CHECK(t.defined(), "save_safetensors ", path, ": tensor '", name, "' is undefined");
    host.push_back(t.to(Device::cpu()).contiguous());
    const Tensor& c = host.back();
    outs[name] = Out{file_dtype_name(c.dtype()), c.shape(), c.raw_data(), c.nbytes()};
  }
  for (const auto& [name, a] : u8) {
    int64_t n = 1;
    for (int64_t d : a.shape) {
      MOKD_CHECK(d >= 0, "save_safetensors ", path, ": U8 array '", name, "' has a negative side");
      n *= d;
    }
    MOKD_CHECK(static_cast<size_t>(n) == a.data.size(), "save_safetensors ", path, ": U8 array '",
               name, "' holds ", a.data.size(), " bytes, its shape needs ", n);
    MOKD_CHECK(!outs.count(name), "save_safetensors ", path, ": '", name,
               "' is both a tensor and a U8 array");
    outs[name] = Out{"U8", a.shape, a.data.data(), a.data.size()};
  }
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    h["__metadata__"] = std::move(m);
  }
  uint64_t offset = 0;
  for (const auto& [name, o] : outs) {
    MOKD_CHECK(name != "__metadata__", "save_safetensors ", path,
               ": '__metadata__' is reserved, not a tensor name");
    nlohmann::ordered_json e = nlohmann::ordered_json::object();
    e["dtype"] = o.dtype;
    e["shape"] = o.shape;
    e["data_offsets"] = {offset, offset + o.nbytes};
    h[name] = std::move(e);
    offset += o.nbytes;
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::json::exception& e) {
    MOKD_FAIL("save_safetensors ", path,
              ": cannot encode the header (names and metadata must be UTF-8): ", e.what());
  }
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  uint8_t len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));

  // Atomic replace: write a temporary file beside the target, fsync, rename over it.
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  MOKD_CHECK(fd >= 0, "save_safetensors: cannot create ", tmp, ": ", std::strerror(errno));
  try {
    write_all(fd, len, 8, tmp);
    write_all(fd, header.data(), header.size(), tmp);
    for (const auto& [name, o] : outs)
      if (o.nbytes > 0) write_all(fd, o.data, o.nbytes, tmp);
    MOKD_CHECK(::fsync(fd) == 0, "save_safetensors: fsync of ", tmp,
               " failed: ", std::strerror(errno));
    int rc = ::close(fd);
    fd = -1;
    MOKD_CHECK(rc == 0, "save_safetensors: closing ", tmp, " failed: ", std::strerror(errno));
    MOKD_CHECK(::rename(tmp.c_str(), path.c_str()) == 0, "save_safetensors: renaming ", tmp, " to ",
               path, " failed: ", std::strerror(errno));
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable (best effort: some filesystems refuse fsync on folders).
  std::string dir = std::filesystem::path(path).parent_path().string();
  int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace mokd::io
