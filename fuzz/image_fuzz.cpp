// libFuzzer target for the image decoders (io/decode: JPEG via libturbojpeg, PNG via libpng):
// arbitrary bytes must decode to a consistent RGB image or throw mokd::Error, never crash, hang or
// read out of bounds. Built and run by tools/fuzz.sh (seeds: PNG/JPEG files the script writes with
// PIL).
#include <cstdint>
#include <cstdlib>

#include "engine/error.h"
#include "io/decode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Reused across inputs, as the loader's workers reuse theirs: a stale buffer must not leak in.
  static mokd::data::Image img;
  try {
    // A few bytes can declare a 2^28-pixel image that libjpeg fills in seconds (not a bug, but
    // a fuzzer timeout): cap the size, as libjpeg-turbo's own fuzzers do.
    mokd::data::decode_image(data, size, "<fuzz>", img, uint64_t(1) << 22);
    if (img.height <= 0 || img.width <= 0 || img.channels != 3 ||
        img.pixels.size() != static_cast<size_t>(img.height * img.width * 3))
      std::abort();
  } catch (const mokd::Error&) {
  }
  return 0;
}
