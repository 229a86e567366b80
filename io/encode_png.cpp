// PNG encoding with libpng's simplified write API, into memory (the caller writes the file).
#include "io/encode_png.h"

#include <png.h>

#include <cstring>

#include "engine/error.h"

namespace mokd::data {

std::vector<uint8_t> encode_png(const Image& img, const std::string& what) {
  MOKD_CHECK(img.channels == 1 || img.channels == 3, what,
             ": PNG encoding takes 1 or 3 channels, got ", img.channels);
  MOKD_CHECK(img.height > 0 && img.width > 0 && img.height <= 0x7fffffff && img.width <= 0x7fffffff,
             what, ": cannot encode a ", img.height, "x", img.width, " image as PNG");
  MOKD_CHECK(img.pixels.size() == static_cast<size_t>(img.height * img.width * img.channels), what,
             ": the image holds ", img.pixels.size(), " bytes, not ", img.height, "x", img.width,
             "x", img.channels);
  png_image p;
  std::memset(&p, 0, sizeof p);
  p.version = PNG_IMAGE_VERSION;
  p.width = static_cast<png_uint_32>(img.width);
  p.height = static_cast<png_uint_32>(img.height);
  p.format = img.channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  // First the size, then the bytes (libpng's two-call protocol).
  png_alloc_size_t size = 0;
  const bool sized = png_image_write_to_memory(&p, nullptr, &size, 0, img.data(), 0, nullptr) != 0;
  MOKD_CHECK(sized && size > 0, what, ": PNG encoding failed: ", p.message);
  std::vector<uint8_t> out(size);
  const bool written =
      png_image_write_to_memory(&p, out.data(), &size, 0, img.data(), 0, nullptr) != 0;
  png_image_free(&p);
  MOKD_CHECK(written, what, ": PNG encoding failed: ", p.message);
  out.resize(size);
  return out;
}

}  // namespace mokd::data
