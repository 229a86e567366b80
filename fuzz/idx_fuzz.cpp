// libFuzzer target for the IDX reader (raw and gzipped): the input is split into an images file and
// a labels file (the first byte gives the split); both are written to a private temp folder and
// loaded. Each must load into a consistent dataset or throw mokd::Error. Built and run by
// tools/fuzz.sh (seeds: small IDX files, gzipped and raw).
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

#include "engine/error.h"
#include "io/dataset.h"

namespace {

std::string dir() {
  static const std::string d = [] {
    char tmpl[] = "/tmp/mokd_idx_fuzz_XXXXXX";
    const char* p = mkdtemp(tmpl);
    if (!p) std::abort();
    return std::string(p);
  }();
  return d;
}

void write(const std::string& path, const uint8_t* p, size_t n) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(p), static_cast<std::streamsize>(n));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const size_t split = 1 + (size - 1) * data[0] / 255;
  // A gzip magic at the start selects the .gz name, as the loader looks at the bytes anyway.
  const std::string img = dir() + "/images", lab = dir() + "/labels";
  write(img, data + 1, split - 1);
  write(lab, data + split, size - split);
  try {
    auto ds = mokd::data::load_idx(img, lab);
    const int64_t n = ds->size();
    const size_t per = static_cast<size_t>(ds->height() * ds->width() * ds->channels());
    if (ds->pixels().size() != per * static_cast<size_t>(n)) std::abort();
    if (n > 0) {
      mokd::data::Sample s = ds->get(n - 1);
      if (s.pixels.size() != per || s.label < 0 || s.label >= ds->num_classes()) std::abort();
    }
  } catch (const mokd::Error&) {
  }
  return 0;
}
