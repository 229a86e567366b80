// decode_image: picks the decoder from the file's signature (not its name: ImageNet's train set
// holds a PNG named .JPEG), as Pillow's Image.open does.
#include "io/decode.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "engine/error.h"

namespace mokd::data {

void decode_image(const uint8_t* bytes, size_t size, const std::string& source, Image& out,
                  uint64_t max_pixels) {
  static const uint8_t kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (bytes && size >= 8 && std::memcmp(bytes, kPng, 8) == 0)
    return decode_png(bytes, size, source, out, max_pixels);
  if (bytes && size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF)
    return decode_jpeg(bytes, size, source, out, max_pixels);
  MOKD_FAIL(source, ": not a JPEG or PNG image (",
            size < 3 ? "file too short" : "unknown signature", ", ", size, " bytes)");
}

Image decode_image(const uint8_t* bytes, size_t size, const std::string& source,
                   uint64_t max_pixels) {
  Image out;
  decode_image(bytes, size, source, out, max_pixels);
  return out;
}

void detail::check_decode_size(const std::string& source, const char* format, uint64_t width,
                               uint64_t height, uint64_t max_pixels) {
  max_pixels = std::min(max_pixels, kMaxDecodePixels);
  if (width * height <= max_pixels) return;  // both < 2^32: no overflow
  std::string limit = std::to_string(max_pixels);
  if (max_pixels && (max_pixels & (max_pixels - 1)) == 0)  // a power of two, as the default
    limit = "2^" + std::to_string(std::countr_zero(max_pixels));
  MOKD_FAIL(source, ": ", format, " of ", width, "x", height,
            " pixels is larger than the decoder's limit of ", limit, " pixels");
}

}  // namespace mokd::data
