// A decoded image: height x width x channels uint8, interleaved (HWC), 1 (L) or 3 (RGB)
// channels. The per-sample transforms (io/resample, io/randaugment, ...) read and write it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace mokd::data {

struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;  // height * width * channels bytes, row-major HWC

  Image() = default;
  Image(int64_t h, int64_t w, int64_t c) { reset(h, w, c); }
  // Sets the shape and sizes the buffer (contents unspecified; capacity is kept for reuse).
  void reset(int64_t h, int64_t w, int64_t c) {
    height = h;
    width = w;
    channels = c;
    pixels.resize(static_cast<size_t>(h * w * c));
  }
  uint8_t* data() { return pixels.data(); }
  const uint8_t* data() const { return pixels.data(); }
  uint8_t* row(int64_t y) { return pixels.data() + static_cast<size_t>(y * width * channels); }
  const uint8_t* row(int64_t y) const {
    return pixels.data() + static_cast<size_t>(y * width * channels);
  }
  bool empty() const { return pixels.empty(); }
};

}  // namespace mokd::data
