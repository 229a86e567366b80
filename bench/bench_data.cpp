// CPU microbenchmarks of the per-image data transforms at ImageNet sizes: the Pillow-exact resize
// of a 500x375 RGB image (a typical ImageNet photo) to 224x224, whole and from a
// RandomResizedCrop-sized box. Time per image; one thread.
//
//   build-bench/mokd_bench --benchmark_filter=Resize
#include <benchmark/benchmark.h>

#include "io/resample.h"

namespace {

using namespace mokd::data;

mokd::data::Image random_image(int64_t h, int64_t w, int64_t c, uint32_t seed) {
  mokd::data::Image im(h, w, c);
  uint32_t x = seed;
  for (uint8_t& v : im.pixels) {
    x = x * 1664525u + 1013904223u;  // LCG: enough for pixel noise
    v = static_cast<uint8_t>(x >> 24);
  }
  return im;
}

// state.range(0): 0 nearest, 1 bilinear, 2 bicubic; range(1): 1 = a 300x220 crop box.
void BM_Resize500x375To224(benchmark::State& state) {
  const Image src = random_image(375, 500, 3, 1);
  const auto interp = static_cast<Interpolation>(state.range(0));
  const Box box = state.range(1) ? Box{40, 90, 220, 300} : Box{0, 0, 375, 500};
  Image dst;
  ResampleScratch scratch;
  for (auto _ : state) {
    resize(src, box, 224, 224, interp, dst, &scratch);
    benchmark::DoNotOptimize(dst.pixels.data());
    benchmark::ClobberMemory();
  }
  state.SetLabel(std::string(interpolation_name(interp)) + (state.range(1) ? " crop" : " whole"));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Resize500x375To224)
    ->ArgsProduct({{0, 1, 2}, {0, 1}})
    ->ArgNames({"interp", "crop"})
    ->Unit(benchmark::kMicrosecond);

}  // namespace
