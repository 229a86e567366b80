// decode_jpeg: libturbojpeg with the settings Pillow's JPEG decoder leaves to libjpeg (accurate
// integer IDCT, fancy upsampling, libjpeg's own choice of the file's colour space), one decoder
// per thread, and Pillow's CMYK -> RGB. A walk over the marker segments finds the frame header
// and whether the data reaches its EOI marker before libjpeg runs: libjpeg pads a short file with
// a fake EOI and only warns, Pillow refuses it.
#include <turbojpeg.h>

#include <cstring>
#include <string>

#include "engine/error.h"
#include "io/decode.h"

namespace mokd::data {

namespace {

// The frame header and the end of the data, as libjpeg's marker reader sees them: markers in
// order from SOI, segments skipped by their length, entropy-coded data (after SOS) scanned up to
// the next marker other than a restart, reading stopped at the first EOI.
struct JpegLayout {
  bool frame = false;  // a SOFn segment was read: the fields below are set
  int precision = 0, height = 0, width = 0, components = 0;
  bool eoi = false;  // an EOI marker was reached within the data
};

bool is_sof(uint8_t m) {  // SOF0..SOF15 less DHT (C4), JPG (C8) and DAC (CC)
  return m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
}

// The index of the first 0xFF at or after i, n if none (memchr: the scan covers the whole file).
size_t next_ff(const uint8_t* p, size_t i, size_t n) {
  if (i >= n) return n;
  const void* f = std::memchr(p + i, 0xFF, n - i);
  return f ? static_cast<size_t>(static_cast<const uint8_t*>(f) - p) : n;
}

JpegLayout walk_jpeg(const uint8_t* p, size_t n) {
  JpegLayout r;
  size_t i = 2;  // after SOI
  for (;;) {
    // libjpeg skips (and warns about) bytes that are not a marker, then 0xFF fill bytes.
    i = next_ff(p, i, n);
    while (i < n && p[i] == 0xFF) ++i;
    if (i >= n) return r;
    const uint8_t m = p[i++];
    if (m == 0xD9) {
      r.eoi = true;
      return r;
    }
    if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;  // no length: TEM, RSTn
    if (n - i < 2) return r;
    const size_t len = (size_t(p[i]) << 8) | p[i + 1];
    if (len < 2 || n - i < len) return r;  // libjpeg fails on the first, runs out on the second
    if (is_sof(m) && !r.frame && len >= 8) {
      r.frame = true;
      r.precision = p[i + 2];
      r.height = (p[i + 3] << 8) | p[i + 4];
      r.width = (p[i + 5] << 8) | p[i + 6];
      r.components = p[i + 7];
    }
    i += len;
    if (m != 0xDA) continue;
    // A scan: 0xFF is followed by 0x00 (a stuffed data byte), fill bytes and a restart marker
    // (still data), or the marker that ends the scan.
    for (;;) {
      i = next_ff(p, i, n);
      size_t j = i + 1;
      while (j < n && p[j] == 0xFF) ++j;
      if (j >= n) return r;
      if (p[j] != 0x00 && !(p[j] >= 0xD0 && p[j] <= 0xD7)) break;  // i: the marker's 0xFF
      i = j + 1;
    }
  }
}

// One decompressor per thread, created on first use: a handle is reusable after any error.
tjhandle thread_decoder() {
  struct Handle {
    tjhandle h = tjInitDecompress();
    ~Handle() {
      if (h) tjDestroy(h);
    }
  };
  thread_local Handle handle;
  MOKD_CHECK(handle.h, "cannot create a TurboJPEG decoder (", tjGetErrorStr2(nullptr), ")");
  return handle.h;
}

// Pillow's a * b / 255 for bytes: (t + (t >> 8)) >> 8 with t = a * b + 128.
inline int muldiv255(int a, int b) {
  const int t = a * b + 128;
  return ((t >> 8) + t) >> 8;
}

// In place, 4 bytes per pixel -> 3: libjpeg's CMYK as stored (Adobe files hold it inverted, and
// Pillow reads every 4-component JPEG as such, "CMYK;I") to RGB as Pillow's convert does:
// nk = 255 - K, out = nk - nk * C / 255. With the inversion, nk is the stored K byte.
void cmyk_inverted_to_rgb(uint8_t* px, size_t pixels) {
  for (size_t i = 0; i < pixels; ++i) {
    const uint8_t* in = px + 4 * i;  // read before writing: 3 * i + 2 < 4 * i + 4
    const int nk = in[3];
    const int c = 255 - in[0], m = 255 - in[1], y = 255 - in[2];
    uint8_t* out = px + 3 * i;
    out[0] = static_cast<uint8_t>(nk - muldiv255(c, nk));
    out[1] = static_cast<uint8_t>(nk - muldiv255(m, nk));
    out[2] = static_cast<uint8_t>(nk - muldiv255(y, nk));
  }
}

}  // namespace

void decode_jpeg(const uint8_t* bytes, size_t size, const std::string& source, Image& out,
                 uint64_t max_pixels) {
  MOKD_CHECK(bytes && size >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8, source,
             ": not a JPEG (no SOI marker)");
  const JpegLayout l = walk_jpeg(bytes, size);
  if (!l.frame)
    MOKD_FAIL(source, l.eoi ? ": corrupt JPEG (no frame header before the EOI marker)"
                            : ": truncated JPEG (the data ends before the frame header)");
  MOKD_CHECK(l.precision == 8, source, ": ", l.precision,
             "-bit JPEG samples are not supported (8-bit only, as in Pillow)");
  MOKD_CHECK(l.components == 1 || l.components == 3 || l.components == 4, source, ": JPEG with ",
             l.components, " components is not supported (1, 3 or 4, as in Pillow)");
  MOKD_CHECK(l.width > 0 && l.height > 0, source, ": corrupt JPEG (size ", l.width, "x", l.height,
             " in the frame header)");
  detail::check_decode_size(source, "JPEG", l.width, l.height, max_pixels);
  MOKD_CHECK(l.eoi, source, ": truncated JPEG (the data ends before the EOI marker)");

  const bool cmyk = l.components == 4;
  // One component decodes straight to RGB: libjpeg replicates grey, as Pillow's L -> RGB does.
  out.reset(l.height, l.width, 3);
  if (cmyk) out.pixels.resize(size_t(l.width) * size_t(l.height) * 4);
  tjhandle tj = thread_decoder();
  // width and height as in the frame header: TurboJPEG then decodes at scale 1. libjpeg's defaults,
  // JDCT_ISLOW and fancy upsampling, are what Pillow uses: no flag changes them. LIMITSCANS refuses
  // progressive files of more than 500 scans (made to take quadratic time; encoders write ~10),
  // which Pillow would decode slowly.
  if (tjDecompress2(tj, bytes, static_cast<unsigned long>(size), out.data(), l.width, 0, l.height,
                    cmyk ? TJPF_CMYK : TJPF_RGB, TJFLAG_LIMITSCANS) != 0) {
    const std::string msg = tjGetErrorStr2(tj);
    // Warnings (damaged data libjpeg recovered from) are accepted as Pillow accepts them; running
    // out of data cannot happen once the walk found EOI, but would be the truncation it reports.
    if (tjGetErrorCode(tj) != TJERR_WARNING || msg.rfind("Premature end of JPEG file", 0) == 0)
      MOKD_FAIL(source,
                tjGetErrorCode(tj) == TJERR_WARNING ? ": truncated JPEG (libjpeg: "
                                                    : ": corrupt JPEG (libjpeg: ",
                msg, ")");
  }
  if (cmyk) {
    cmyk_inverted_to_rgb(out.data(), size_t(l.width) * size_t(l.height));
    out.pixels.resize(size_t(l.width) * size_t(l.height) * 3);
  }
}

}  // namespace mokd::data
