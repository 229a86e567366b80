// Image decoding: JPEG (libturbojpeg) and PNG (libpng) bytes to an RGB Image with the pixel values
// Pillow gives for `Image.open(f).convert("RGB")`, which is how timm's ImageFolder reads a file, so
// that a model sees the same input here as in the PyTorch reference.
//
// What each kind of file becomes (tests/test_decode.cpp checks every case against Pillow's output,
// written by tools/reference/data_decode.py):
// - JPEG, 8-bit samples, 1, 3 or 4 components. libjpeg's accurate integer IDCT and fancy
//   (smooth) chroma upsampling, the defaults Pillow keeps. Grey: the value replicated. CMYK and
//   YCCK (Adobe, stored inverted): libjpeg's CMYK inverted, then Pillow's CMYK -> RGB
//   (R = (255 - K) - (C * (255 - K)) / 255, rounded as Pillow rounds). EXIF orientation and ICC
//   profiles are ignored, as convert() ignores them. libjpeg's warnings about damaged data it
//   recovered from (e.g. "extraneous bytes before marker") are ignored, as Pillow ignores them;
//   data that ends before the EOI marker is an error ("truncated"), as it is in Pillow.
// - PNG, any bit depth and colour type. Alpha is dropped, not composited (RGBA, LA); tRNS is
//   ignored; palette images use their palette (indices beyond it give black); 1/2/4-bit grey is
//   scaled to 0..255 (v * 255 / (2^bits - 1)); 16-bit colour keeps the high byte of each sample;
//   16-bit grey (Pillow's mode I;16) is clamped to 255, not scaled: values above 255 give 255.
//   Interlaced files are deinterlaced. Data after the image (chunks after IDAT, IEND) is not
//   read.
// Errors name `source`, say what is wrong (truncated, corrupt, unsupported, too large) and quote
// the decoder's message; no image larger than kMaxDecodePixels is allocated. Refused here but
// decoded by Pillow: formats other than JPEG and PNG, progressive JPEGs of more than 500 scans,
// PNG image data (IDAT) whose CRC is wrong or cut off, images over the pixel limit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/image.h"

namespace mokd::data {

// The largest image decoded: 2^28 pixels (768 MiB as RGB), far above any dataset image. A header
// that claims more (a corrupt or hostile file) is an error before anything is allocated.
inline constexpr uint64_t kMaxDecodePixels = uint64_t(1) << 28;

// Decodes a JPEG (bytes start FF D8 FF) or a PNG (the 8-byte PNG signature) into `out`: height x
// width x 3 (RGB), reusing out's buffer. An image of more than max_pixels pixels (at most
// kMaxDecodePixels; a larger value means kMaxDecodePixels) is refused from its header, before
// anything is allocated or decoded. Thread-safe (each thread keeps one JPEG decoder). Throws
// mokd::Error naming `source` on any other input or any decoding failure; `out` is then
// unspecified.
void decode_image(const uint8_t* bytes, size_t size, const std::string& source, Image& out,
                  uint64_t max_pixels = kMaxDecodePixels);
Image decode_image(const uint8_t* bytes, size_t size, const std::string& source,
                   uint64_t max_pixels = kMaxDecodePixels);

// The two decoders decode_image chooses between, for callers that know the format.
void decode_jpeg(const uint8_t* bytes, size_t size, const std::string& source, Image& out,
                 uint64_t max_pixels = kMaxDecodePixels);
void decode_png(const uint8_t* bytes, size_t size, const std::string& source, Image& out,
                uint64_t max_pixels = kMaxDecodePixels);

namespace detail {
// Throws when width x height exceeds max_pixels (capped at kMaxDecodePixels), naming source, the
// format ("JPEG", "PNG") and both numbers. Shared by the two decoders.
void check_decode_size(const std::string& source, const char* format, uint64_t width,
                       uint64_t height, uint64_t max_pixels);
}  // namespace detail

}  // namespace mokd::data
