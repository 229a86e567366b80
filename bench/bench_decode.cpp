// Image decoding (io/decode) on one thread at ImageNet's typical size, 500 x 375: JPEG at quality
// 90, 4:2:0 (as most ImageNet files are) and a PNG of the same image. Reported per image.
//
//   build-bench/mokd_bench --benchmark_filter=Decode
#include <benchmark/benchmark.h>
#include <png.h>
#include <turbojpeg.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "io/decode.h"

namespace {

constexpr int kW = 500, kH = 375;

// A photograph-like image: gradient, a disc, luminance texture at four scales (random grids
// upsampled bilinearly) and mild noise, so that the file is about as large as an ImageNet one of
// this size (~90 KiB at quality 90, as tools/make_synthetic_imagenet.py writes).
std::vector<uint8_t> photo_like() {
  uint32_t state = 12345;
  auto gauss = [&] {  // sum of 4 uniforms, scaled to unit variance: close enough to normal
    double s = 0;
    for (int k = 0; k < 4; ++k) {
      state = state * 1664525u + 1013904223u;
      s += double(state >> 8) / double(1 << 24) - 0.5;
    }
    return s * std::sqrt(3.0);
  };
  std::vector<double> tex(size_t(kW) * kH, 0.0);
  const int cells[4] = {4, 16, 64, 250};
  const double stds[4] = {30, 25, 25, 35};
  for (int o = 0; o < 4; ++o) {
    const int gw = cells[o] + 1, gh = cells[o] * kH / kW + 2;
    std::vector<double> g(size_t(gw) * gh);
    for (double& v : g) v = stds[o] * gauss();
    const double step = double(kW) / cells[o];
    for (int y = 0; y < kH; ++y)
      for (int x = 0; x < kW; ++x) {
        const double fx = x / step, fy = y / step;
        const int ix = int(fx), iy = int(fy);
        const double ax = fx - ix, ay = fy - iy;
        auto at = [&](int yy, int xx) { return g[size_t(yy) * gw + xx]; };
        tex[size_t(y) * kW + x] += (1 - ay) * ((1 - ax) * at(iy, ix) + ax * at(iy, ix + 1)) +
                                   ay * ((1 - ax) * at(iy + 1, ix) + ax * at(iy + 1, ix + 1));
      }
  }
  std::vector<uint8_t> px(size_t(kW) * kH * 3);
  for (int y = 0; y < kH; ++y)
    for (int x = 0; x < kW; ++x) {
      const bool disc = (x - 180) * (x - 180) + (y - 200) * (y - 200) < 90 * 90;
      const double v[3] = {255.0 * x / kW, 255.0 * y / kH, 100.0};
      const double t = tex[size_t(y) * kW + x] + 3 * gauss();
      for (int c = 0; c < 3; ++c) {
        const double s = (disc ? 255 - v[c] : v[c]) + t;
        px[(size_t(y) * kW + x) * 3 + c] = static_cast<uint8_t>(std::fmin(255, std::fmax(0, s)));
      }
    }
  return px;
}

std::vector<uint8_t> jpeg_file() {
  const std::vector<uint8_t> px = photo_like();
  tjhandle tj = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  if (!tj || tjCompress2(tj, px.data(), kW, 0, kH, TJPF_RGB, &buf, &size, TJSAMP_420, 90, 0))
    throw std::runtime_error("tjCompress2 failed");
  std::vector<uint8_t> out(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  return out;
}

std::vector<uint8_t> png_file() {
  const std::vector<uint8_t> px = photo_like();
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = kW;
  img.height = kH;
  img.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  png_image_write_to_memory(&img, nullptr, &size, 0, px.data(), 0, nullptr);
  std::vector<uint8_t> out(size);
  if (!png_image_write_to_memory(&img, out.data(), &size, 0, px.data(), 0, nullptr))
    throw std::runtime_error("png_image_write_to_memory failed");
  out.resize(size);
  return out;
}

void run(benchmark::State& state, const std::vector<uint8_t>& file) {
  mokd::data::Image img;
  for (auto _ : state) {
    mokd::data::decode_image(file.data(), file.size(), "bench", img);
    benchmark::DoNotOptimize(img.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["file_KiB"] = double(file.size()) / 1024;
}

void BM_DecodeJpeg500x375(benchmark::State& state) { run(state, jpeg_file()); }
BENCHMARK(BM_DecodeJpeg500x375)->Unit(benchmark::kMicrosecond);

void BM_DecodePng500x375(benchmark::State& state) { run(state, png_file()); }
BENCHMARK(BM_DecodePng500x375)->Unit(benchmark::kMicrosecond);

}  // namespace
