// io/decode against Pillow: every JPEG and PNG case of tools/reference/data_decode.py decodes to
// exactly the RGB Pillow's Image.open(f).convert("RGB") gives; truncated and corrupt files (which
// Pillow refuses too) are errors naming the source; headers claiming huge images are refused
// before allocating; buffers are reused across images and threads safely.
#include <zlib.h>

#include <algorithm>
#include <cstdlib>
#include <set>
#include <thread>

#include "engine/error.h"
#include "io/decode.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using namespace mokd::data;
using test::expect_error;

const test::Fixture& fixture() {
  static const test::Fixture fx("data_decode.safetensors");  // tools/reference/data_decode.py
  return fx;
}

// A tensor of byte values (stored as F16, read as F32) as bytes.
std::vector<uint8_t> bytes_of(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  return std::vector<uint8_t>(v.begin(), v.end());
}

std::vector<uint8_t> file_of(const std::string& name) {
  return bytes_of(fixture()[name + "_file"]);
}

// Decodes case `name` and compares with Pillow's pixels: shape, then every byte.
void expect_matches_pillow(const std::string& name) {
  SCOPED_TRACE(name + " (" + fixture().param_s("cases." + name + ".what") + ")");
  const std::vector<uint8_t> file = file_of(name);
  const Tensor& expected = fixture()[name + "_rgb"];
  Image img = decode_image(file.data(), file.size(), name);
  ASSERT_EQ(expected.shape().size(), 3u);
  ASSERT_EQ(img.height, expected.shape()[0]);
  ASSERT_EQ(img.width, expected.shape()[1]);
  ASSERT_EQ(img.channels, 3);
  ASSERT_EQ(expected.shape()[2], 3);
  const std::vector<uint8_t> want = bytes_of(expected);
  ASSERT_EQ(img.pixels.size(), want.size());
  int worst = 0;
  size_t differ = 0, first = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const int d = std::abs(int(img.pixels[i]) - int(want[i]));
    if (d && !differ++) first = i;
    worst = std::max(worst, d);
  }
  EXPECT_EQ(differ, 0u) << "max |difference| " << worst << "; first at byte " << first << " (pixel "
                        << first / 3 << ", channel " << first % 3 << "): got "
                        << int(img.pixels[first]) << ", Pillow " << int(want[first]);
}

// Every case of one format, and the cases the fixture must hold (so that a regenerated fixture
// that lost one fails here instead of testing less).
void expect_format_matches_pillow(const std::string& format,
                                  const std::vector<std::string>& required) {
  std::set<std::string> seen;
  for (const auto& [name, c] : fixture().param("cases").items())
    if (c.at("format") == format) {
      seen.insert(name);
      expect_matches_pillow(name);
    }
  for (const std::string& r : required) EXPECT_TRUE(seen.count(r)) << "fixture lacks " << r;
}

TEST(DecodeJpeg, EveryCaseMatchesPillowExactly) {
  expect_format_matches_pillow(
      "JPEG", {"jpeg_rgb_420_q75", "jpeg_rgb_420_q95", "jpeg_rgb_444_q75", "jpeg_rgb_444_q95",
               "jpeg_rgb_422_progressive", "jpeg_rgb_restart", "jpeg_rgb_adobe_rgb",
               "jpeg_rgb_exif_icc_comment", "jpeg_gray", "jpeg_cmyk", "jpeg_extraneous_bytes",
               "jpeg_trailing_garbage"});
  if (fixture().param("skipped").contains("jpeg_ycck"))
    std::cout << "jpeg_ycck not in the fixture: " << fixture().param_s("skipped.jpeg_ycck") << "\n";
  else
    EXPECT_TRUE(fixture().param("cases").contains("jpeg_ycck"));
}

TEST(DecodePng, EveryCaseMatchesPillowExactly) {
  expect_format_matches_pillow("PNG", {"png_rgb",
                                       "png_rgba",
                                       "png_la",
                                       "png_l",
                                       "png_l_trns",
                                       "png_rgb_trns",
                                       "png_p_trns_bytes",
                                       "png_p_trns_index",
                                       "png_1bit",
                                       "png_gray16",
                                       "png_gray2",
                                       "png_gray4",
                                       "png_p1",
                                       "png_p2_short_palette",
                                       "png_rgb16",
                                       "png_rgba16",
                                       "png_la16",
                                       "png_rgb_interlaced",
                                       "png_p4_interlaced_trns",
                                       "png_gray16_interlaced",
                                       "png_no_iend"});
}

// The files Pillow refuses: each error names the source and says truncated or corrupt.
TEST(DecodeErrors, TruncatedAndCorruptFilesNameTheSource) {
  const auto& errors = fixture().param("errors");
  ASSERT_GE(errors.size(), 6u);
  for (const auto& [name, e] : errors.items()) {
    SCOPED_TRACE(name + " (Pillow: " + e.at("pillow").get<std::string>() + ")");
    const std::vector<uint8_t> file = file_of(name);
    const std::string format = name.rfind("jpeg", 0) == 0 ? "JPEG" : "PNG";
    const std::string source = "/data/train/n01/" + name + ".JPEG";
    expect_error([&] { decode_image(file.data(), file.size(), source); },
                 {source, e.at("kind").get<std::string>() + " " + format});
  }
  expect_error([&] { decode_image(nullptr, 0, "empty.jpg"); }, {"empty.jpg", "too short"});
  const uint8_t gif[] = {'G', 'I', 'F', '8', '9', 'a', 0, 0};
  expect_error([&] { decode_image(gif, sizeof gif, "x.gif"); },
               {"x.gif", "not a JPEG or PNG", "unknown signature"});
}

// Every strict prefix of a JPEG lacks its EOI marker: truncated, never a crash or a half image.
// A PNG prefix that holds all the image data may decode (Pillow reads nothing after it either),
// and must then give the whole image.
TEST(DecodeErrors, EveryPrefixIsRefusedOrWhole) {
  for (const std::string name : {"jpeg_rgb_422_progressive", "jpeg_rgb_exif_icc_comment",
                                 "jpeg_cmyk", "png_rgba", "png_p4_interlaced_trns"}) {
    SCOPED_TRACE(name);
    const std::vector<uint8_t> file = file_of(name);
    const std::vector<uint8_t> whole = decode_image(file.data(), file.size(), name).pixels;
    const bool jpeg = name.rfind("jpeg", 0) == 0;
    Image img;
    int decoded = 0;
    for (size_t n = 0; n < file.size(); ++n) {
      try {
        decode_image(file.data(), n, name, img);
        ++decoded;
        ASSERT_FALSE(jpeg) << "a " << n << "-byte prefix decoded";
        ASSERT_EQ(img.pixels, whole) << "a " << n << "-byte prefix decoded to another image";
      } catch (const Error& e) {
        ASSERT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      }
    }
    if (!jpeg) EXPECT_LE(decoded, 16) << "only the chunk tail after the image data may be cut";
  }
}

// Headers that claim a huge image fail before anything is allocated (the image fuzzer found a
// JPEG header of 65535 x 65535 that asked for 12.8 GB).
TEST(DecodeErrors, HugeDeclaredSizesAreRejectedBeforeDecoding) {
  // PNG: IHDR width/height at bytes 16..23, its CRC over "IHDR" + 13 data bytes at 29..32.
  std::vector<uint8_t> png = file_of("png_rgb");
  for (int k : {16, 20}) {
    png[k] = 0;
    png[k + 1] = 0x01;  // 100000 = 0x000186A0
    png[k + 2] = 0x86;
    png[k + 3] = 0xA0;
  }
  uint32_t crc = static_cast<uint32_t>(crc32(0L, png.data() + 12, 17));
  for (int i = 0; i < 4; ++i) png[29 + i] = static_cast<uint8_t>(crc >> (24 - 8 * i));
  expect_error([&] { decode_image(png.data(), png.size(), "big.png"); },
               {"big.png", "100000x100000", "2^28 pixels"});
  // JPEG: the SOF marker's height and width (big-endian u16 at marker + 5 and + 7).
  std::vector<uint8_t> jpg = file_of("jpeg_rgb_420_q75");
  size_t sof = 0;
  for (size_t i = 0; i + 9 < jpg.size(); ++i)
    if (jpg[i] == 0xFF && (jpg[i + 1] == 0xC0 || jpg[i + 1] == 0xC2)) {
      sof = i;
      break;
    }
  ASSERT_GT(sof, 0u) << "no SOF marker in the test JPEG";
  for (size_t k : {sof + 5, sof + 7}) {
    jpg[k] = 0xFF;
    jpg[k + 1] = 0xDC;  // 65500
  }
  expect_error([&] { decode_image(jpg.data(), jpg.size(), "big.jpg"); },
               {"big.jpg", "65500x65500", "2^28 pixels"});
  // A caller's smaller limit: 19 x 13 = 247 pixels pass at 247, not at 246.
  const std::vector<uint8_t> small = file_of("png_rgb");
  EXPECT_EQ(decode_image(small.data(), small.size(), "s.png", 247).pixels.size(), 247u * 3);
  expect_error([&] { decode_image(small.data(), small.size(), "s.png", 246); },
               {"s.png", "13x19", "limit of 246 pixels"});
  // 12-bit samples: refused by name, as Pillow refuses them.
  std::vector<uint8_t> deep = file_of("jpeg_rgb_420_q75");
  deep[sof + 4] = 12;
  expect_error([&] { decode_image(deep.data(), deep.size(), "deep.jpg"); },
               {"deep.jpg", "12-bit", "8-bit only"});
}

// One Image reused for images of other sizes and kinds holds exactly the last one; threads
// decoding at once (each with its own JPEG decoder) agree with a single thread.
TEST(DecodeReuse, BuffersAcrossImagesAndThreads) {
  const std::vector<std::string> names = {"jpeg_rgb_444_q95", "png_gray2", "jpeg_cmyk",
                                          "png_rgba16",       "jpeg_gray", "png_rgb"};
  std::vector<std::vector<uint8_t>> files, want;
  for (const std::string& n : names) {
    files.push_back(file_of(n));
    want.push_back(bytes_of(fixture()[n + "_rgb"]));
  }
  Image img;
  for (int round = 0; round < 2; ++round)
    for (size_t i = 0; i < names.size(); ++i) {
      decode_image(files[i].data(), files[i].size(), names[i], img);
      ASSERT_EQ(img.pixels, want[i]) << names[i];
    }
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Image mine;
      for (int k = 0; k < 30; ++k) {
        const size_t i = (k + t) % names.size();
        try {
          decode_image(files[i].data(), files[i].size(), names[i], mine);
          mismatches[t] += mine.pixels != want[i];
        } catch (const Error&) {
          ++mismatches[t];
        }
      }
    });
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(mismatches[t], 0) << "thread " << t;
}

}  // namespace
}  // namespace mokd
