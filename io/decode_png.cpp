// decode_png: libpng's full reading API with only the transforms that give Pillow's values
// (strip 16 -> 8 bits keeps the high byte, as Pillow's 16-bit unpackers do; packing gives one
// byte per sub-byte sample), and the rest done here: grey scaling, palette lookup, dropping alpha.
// libpng's simplified API is not used: it composites alpha on black and applies gamma, which
// Pillow does not.
#include <png.h>

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <vector>

#include "engine/error.h"
#include "io/decode.h"

namespace mokd::data {

namespace {

// The bytes being read and what went wrong. Plain data: it lives across libpng's longjmp.
struct PngInput {
  const uint8_t* data;
  size_t size, pos;
  bool truncated;
  char message[256];
};

void on_error(png_structp png, png_const_charp msg) {
  auto* in = static_cast<PngInput*>(png_get_error_ptr(png));
  std::snprintf(in->message, sizeof in->message, "%s", msg);
  png_longjmp(png, 1);
}

// libpng warns about what Pillow silently accepts (e.g. "iCCP: known incorrect sRGB profile",
// data after the image): not an error here either.
void on_warning(png_structp, png_const_charp) {}

void on_read(png_structp png, png_bytep dst, size_t n) {
  auto* in = static_cast<PngInput*>(png_get_io_ptr(png));
  if (in->size - in->pos < n) {
    in->truncated = true;
    png_error(png, "the data ends inside a chunk");
  }
  std::memcpy(dst, in->data + in->pos, n);
  in->pos += n;
}

// The setjmp frames: only plain locals, so libpng's longjmp skips no destructor.
bool read_header(png_structp png, png_infop info) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_info(png, info);
  return true;
}

bool start_rows(png_structp png, png_infop info) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_update_info(png, info);
  return true;
}

bool read_rows(png_structp png, png_bytep* rows) {
  if (setjmp(png_jmpbuf(png))) return false;
  png_read_image(png, rows);  // all passes of an interlaced file
  return true;
}

struct PngRead {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngRead() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

}  // namespace

void decode_png(const uint8_t* bytes, size_t size, const std::string& source, Image& out,
                uint64_t max_pixels) {
  PngInput in{bytes, size, 0, false, {0}};
  PngRead r;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &in, on_error, on_warning);
  MOKD_CHECK(r.png, source, ": cannot create a PNG reader (out of memory)");
  r.info = png_create_info_struct(r.png);
  MOKD_CHECK(r.info, source, ": cannot create a PNG reader (out of memory)");
  png_set_read_fn(r.png, &in, on_read);
  png_set_user_limits(r.png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);  // the pixel limit below applies
  png_set_benign_errors(r.png, 1);
  auto fail = [&]() {
    if (in.truncated) MOKD_FAIL(source, ": truncated PNG (the data ends after ", size, " bytes)");
    MOKD_FAIL(source, ": corrupt PNG (libpng: ", in.message, ")");
  };
  if (!read_header(r.png, r.info)) fail();

  const uint32_t w = png_get_image_width(r.png, r.info), h = png_get_image_height(r.png, r.info);
  const int depth = png_get_bit_depth(r.png, r.info), type = png_get_color_type(r.png, r.info);
  detail::check_decode_size(source, "PNG", w, h, max_pixels);
  // Samples after the transforms: 8-bit, one per byte, except 16-bit grey (Pillow's I;16), read
  // whole because Pillow clamps it instead of keeping the high byte.
  const bool gray16 = type == PNG_COLOR_TYPE_GRAY && depth == 16;
  if (depth == 16 && !gray16) png_set_strip_16(r.png);
  if (depth < 8) png_set_packing(r.png);
  png_set_interlace_handling(r.png);
  if (!start_rows(r.png, r.info)) fail();
  int channels = 0;
  switch (type) {
    case PNG_COLOR_TYPE_GRAY:
    case PNG_COLOR_TYPE_PALETTE:
      channels = 1;
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      channels = 2;
      break;
    case PNG_COLOR_TYPE_RGB:
      channels = 3;
      break;
    case PNG_COLOR_TYPE_RGB_ALPHA:
      channels = 4;
      break;
    default:
      MOKD_FAIL(source, ": corrupt PNG (colour type ", type, ")");
  }
  const size_t row_bytes = size_t(w) * channels * (gray16 ? 2 : 1);
  MOKD_CHECK(png_get_rowbytes(r.png, r.info) == row_bytes, source, ": PNG rows of ",
             png_get_rowbytes(r.png, r.info), " bytes after libpng's transforms, ", row_bytes,
             " expected");

  out.reset(h, w, 3);
  // RGB rows are read in place; the rest go through a per-thread buffer and are converted.
  const bool direct = channels == 3;
  thread_local std::vector<uint8_t> scratch;
  if (!direct) scratch.resize(row_bytes * h);
  uint8_t* base = direct ? out.data() : scratch.data();
  std::vector<png_bytep> rows(h);
  for (uint32_t y = 0; y < h; ++y) rows[y] = base + row_bytes * y;
  if (!read_rows(r.png, rows.data())) fail();
  // png_read_end is not called: Pillow ignores what follows the image data (even a missing IEND).
  if (direct) return;

  const size_t n = size_t(w) * h;
  uint8_t* o = out.data();
  const uint8_t* s = scratch.data();
  if (type == PNG_COLOR_TYPE_PALETTE) {
    // Entries past the palette's end are black, as in Pillow's zero-filled 256-entry palette.
    uint8_t table[256][3] = {};
    png_colorp pal = nullptr;
    int count = 0;
    if (png_get_PLTE(r.png, r.info, &pal, &count) & PNG_INFO_PLTE)
      for (int i = 0; i < count && i < 256; ++i)
        table[i][0] = pal[i].red, table[i][1] = pal[i].green, table[i][2] = pal[i].blue;
    for (size_t i = 0; i < n; ++i) std::memcpy(o + 3 * i, table[s[i]], 3);
  } else if (gray16) {
    for (size_t i = 0; i < n; ++i) {
      const uint8_t v = s[2 * i] ? 255 : s[2 * i + 1];  // big-endian: > 255 clamps to 255
      o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = v;
    }
  } else if (type == PNG_COLOR_TYPE_GRAY) {
    const int scale = 255 / ((1 << depth) - 1);  // 255, 85, 17, 1 for 1, 2, 4, 8 bits
    for (size_t i = 0; i < n; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = s[i] * scale;
  } else if (type == PNG_COLOR_TYPE_GRAY_ALPHA) {
    for (size_t i = 0; i < n; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = s[2 * i];
  } else {  // RGBA: alpha dropped
    for (size_t i = 0; i < n; ++i) std::memcpy(o + 3 * i, s + 4 * i, 3);
  }
}

}  // namespace mokd::data
