// libFuzzer target for the image decoders (JPEG via libturbojpeg, PNG via libpng): arbitrary bytes
// must decode to a consistent RGB buffer or throw mokd::Error, never crash, hang or read out of
// bounds. Built and run by tools/fuzz.sh (seeds: PNG/JPEG files the script writes with PIL).
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "engine/error.h"
#include "io/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  try {
    int64_t h = 0, w = 0;
    std::vector<uint8_t> rgb = mokd::data::decode_image(bytes, "<fuzz>", &h, &w);
    if (h <= 0 || w <= 0 || rgb.size() != static_cast<size_t>(h * w * 3)) std::abort();
  } catch (const mokd::Error&) {
  }
  return 0;
}
