// io/resample against Pillow's Image.resize (fixture of tools/reference/data_resample.py): every
// case byte for byte, plus the names of the filters and the argument checks.
#include <cstring>
#include <map>

#include "io/resample.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using namespace mokd::data;
using test::expect_error;

std::map<std::string, Image> fixture_images(const test::Fixture& fx) {
  std::map<std::string, Image> images;
  for (const auto& [name, shape] : fx.param("images").items()) {
    Image im(shape.at(0).get<int64_t>(), shape.at(1).get<int64_t>(), shape.at(2).get<int64_t>());
    im.pixels = test::unpack_u8(fx["input_" + name], im.pixels.size());
    images.emplace(name, std::move(im));
  }
  return images;
}

TEST(Resample, MatchesPillowExactly) {
  test::Fixture fx("data_resample.safetensors");  // tools/reference/data_resample.py
  const std::map<std::string, Image> images = fixture_images(fx);
  ResampleScratch scratch;  // shared by every case: reuse must not leak state between calls
  int cases = 0;
  std::map<std::string, int> per_filter;
  for (const auto& [name, cs] : fx.param("cases").items()) {
    const Image& src = images.at(cs.at("image").get<std::string>());
    const Interpolation interp = parse_interpolation(cs.at("filter").get<std::string>(), name);
    const int64_t oh = cs.at("size").at(0).get<int64_t>(), ow = cs.at("size").at(1).get<int64_t>();
    Image out;
    if (cs.contains("box")) {
      const auto& b = cs.at("box");
      resize_box(src, b.at(0).get<double>(), b.at(1).get<double>(), b.at(2).get<double>(),
                 b.at(3).get<double>(), oh, ow, interp, out, &scratch);
    } else if (cs.contains("crop")) {
      const auto& b = cs.at("crop");
      resize(src,
             Box{b.at(0).get<int64_t>(), b.at(1).get<int64_t>(), b.at(2).get<int64_t>(),
                 b.at(3).get<int64_t>()},
             oh, ow, interp, out, &scratch);
    } else {
      resize(src, oh, ow, interp, out, &scratch);
    }
    ASSERT_EQ(out.height, oh) << name;
    ASSERT_EQ(out.width, ow) << name;
    ASSERT_EQ(out.channels, src.channels) << name;
    const std::vector<uint8_t> ref = test::unpack_u8(fx["out_" + name], out.pixels.size());
    int worst = 0, differ = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      const int d = std::abs(int(out.pixels[i]) - int(ref[i]));
      worst = std::max(worst, d);
      differ += d > 0;
    }
    EXPECT_EQ(worst, 0) << name << ": " << differ << " of " << ref.size()
                        << " bytes differ from Pillow";
    ++cases;
    ++per_filter[interpolation_name(interp)];
  }
  EXPECT_GE(cases, 60);
  EXPECT_EQ(per_filter.size(), 3u);
}

TEST(Resample, RawAndThreadLocalScratchAgree) {
  test::Fixture fx("data_resample.safetensors");
  const std::map<std::string, Image> images = fixture_images(fx);
  const Image& src = images.at("rgb_big");
  const Box box{20, 35, 150, 210};
  for (Interpolation interp :
       {Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic}) {
    Image a;
    resize(src, box, 31, 27, interp, a);
    std::vector<uint8_t> b(a.pixels.size());
    ResampleScratch scratch;
    resize(src.data(), src.height, src.width, src.channels, box, 31, 27, interp, b.data(),
           &scratch);
    EXPECT_EQ(a.pixels, b) << interpolation_name(interp);
  }
}

// Pillow resamples each band alike, so an RGB or a 4-channel image equals its channels resized
// one by one as L images: this ties the 3-channel, 1-channel and any-channel code paths together
// (the fixture covers only 1 and 3), in both pass orders and with row counts that are not a
// multiple of the blocks the horizontal pass works in.
TEST(Resample, ChannelsAreIndependent) {
  for (int64_t c : {3, 4, 2}) {
    Image src(45, 38, c);
    uint32_t x = 12345u + static_cast<uint32_t>(c);
    for (uint8_t& v : src.pixels) v = static_cast<uint8_t>((x = x * 1664525u + 1013904223u) >> 24);
    struct Case {
      Box box;
      int64_t oh, ow;
    };
    // Horizontal first (shrink both), vertical first (height down, width up), one pass only.
    for (const Case& cs : {Case{{3, 2, 40, 33}, 17, 13}, Case{{0, 5, 45, 30}, 20, 61},
                           Case{{1, 1, 44, 37}, 44, 19}, Case{{0, 0, 45, 38}, 70, 38}}) {
      for (Interpolation interp :
           {Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic}) {
        Image all;
        resize(src, cs.box, cs.oh, cs.ow, interp, all);
        for (int64_t ch = 0; ch < c; ++ch) {
          Image band(src.height, src.width, 1), out;
          for (size_t i = 0; i < band.pixels.size(); ++i) band.pixels[i] = src.pixels[i * c + ch];
          resize(band, cs.box, cs.oh, cs.ow, interp, out);
          int differ = 0;
          for (size_t i = 0; i < out.pixels.size(); ++i)
            differ += out.pixels[i] != all.pixels[i * c + ch];
          EXPECT_EQ(differ, 0) << c << " channels, channel " << ch << ", "
                               << interpolation_name(interp) << " to " << cs.oh << "x" << cs.ow;
        }
      }
    }
  }
}

TEST(Resample, InterpolationNames) {
  for (Interpolation interp :
       {Interpolation::Nearest, Interpolation::Bilinear, Interpolation::Bicubic})
    EXPECT_EQ(parse_interpolation(interpolation_name(interp), "k"), interp);
  expect_error([] { parse_interpolation("lanczos", "data.interpolation"); },
               {"data.interpolation", "lanczos", "nearest", "bilinear", "bicubic"});
  expect_error([] { parse_interpolation("Bilinear", "x"); }, {"\"Bilinear\""});
}

TEST(Resample, RejectsBadArguments) {
  Image src(10, 12, 3), dst;
  const auto bl = Interpolation::Bilinear;
  expect_error([&] { resize(src, Box{2, 3, 0, 4}, 5, 5, bl, dst); }, {"crop box", "empty"});
  expect_error([&] { resize(src, Box{2, 3, 4, -1}, 5, 5, bl, dst); }, {"crop box", "empty"});
  expect_error(
      [&] {
        resize(src, Box{5, 0, 6, 12}, 5, 5, bl, dst);
      },
      {"crop box", "outside the 10x12 image"});
  expect_error([&] { resize(src, Box{-1, 0, 4, 4}, 5, 5, bl, dst); }, {"outside"});
  expect_error([&] { resize(src, Box{0, 9, 4, 4}, 5, 5, bl, dst); }, {"outside"});
  expect_error([&] { resize(src, 0, 5, bl, dst); }, {"output size 0x5", "positive"});
  expect_error([&] { resize(src, 4, -2, bl, dst); }, {"output size 4x-2", "positive"});
  expect_error([&] { resize(src, 4, 4, bl, src); }, {"dst must not be src"});
  expect_error([&] { resize(Image(), 4, 4, bl, dst); }, {"input image is empty"});
  Image bad(4, 4, 3);
  bad.pixels.resize(7);
  expect_error([&] { resize(bad, 2, 2, bl, dst); }, {"holds 7 bytes"});
  expect_error([&] { resize_box(src, 1, 1, 13, 5, 4, 4, bl, dst); }, {"box", "outside"});
  expect_error([&] { resize_box(src, -0.5, 1, 3, 5, 4, 4, bl, dst); }, {"outside"});
  expect_error([&] { resize_box(src, 2, 1, 2, 5, 4, 4, bl, dst); }, {"box", "empty"});
  expect_error([&] { resize_box(src, 0, 0, 12, 10, 0, 4, bl, dst); }, {"positive"});
  expect_error([&] { resize_box(src, 0, std::nan(""), 12, 10, 4, 4, bl, dst); }, {"outside"});
}

}  // namespace
}  // namespace mokd
