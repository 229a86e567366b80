// CPU microbenchmarks of the per-image augmentation on a 224x224 RGB image (DeiT's training size):
// RandAugment as DeiT configures it ("rand-m9-mstd0.5-inc1", bicubic, ImageNet-mean fill), each
// of its ops alone at magnitude 9, and colour jitter 0.4. One image per iteration, one thread.
//
//   build-bench/mokd_bench --benchmark_filter='RandAugment|RandOp|ColorJitter'
#include <benchmark/benchmark.h>

#include <cmath>

#include "io/randaugment.h"

namespace {

using namespace mokd;
using namespace mokd::data;

constexpr int64_t kSize = 224;

// A photo-like test image: smooth gradients, an edge and mild noise.
Image test_image() {
  Image img(kSize, kSize, 3);
  Rng rng(data_key(7, 0, DataPurpose::Sample, 0));
  for (int64_t y = 0; y < kSize; ++y)
    for (int64_t x = 0; x < kSize; ++x) {
      uint8_t* p = img.row(y) + x * 3;
      const double edge = (x + y > kSize) ? 40 : 0;
      p[0] = static_cast<uint8_t>(std::lround(60 + 0.5 * x + edge + 8 * rng.uniform()));
      p[1] = static_cast<uint8_t>(std::lround(50 + 0.6 * y + 8 * rng.uniform()));
      p[2] = static_cast<uint8_t>(std::lround(120 + 60 * std::sin(x / 9.0) + 8 * rng.uniform()));
    }
  return img;
}

void BM_RandAugment(benchmark::State& state) {
  const Image src = test_image();
  const RandAugmentOptions opt = parse_rand_augment("rand-m9-mstd0.5-inc1", "bench");
  Image img;
  int64_t i = 0;
  for (auto _ : state) {
    img = src;  // the copy is part of what a loader does too
    Rng rng(data_key(1, 0, DataPurpose::Sample, i++));
    rand_augment(opt, img, rng);
    benchmark::DoNotOptimize(img.pixels.data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RandAugment)->Unit(benchmark::kMicrosecond);

void BM_RandOp(benchmark::State& state) {
  const RandOp op = rand_augment_op_list(true)[static_cast<size_t>(state.range(0))];
  state.SetLabel(rand_op_name(op));
  const Image src = test_image();
  const RandAugmentParams params;
  Image img;
  for (auto _ : state) {
    img = src;
    apply_rand_op(op, 9, true, params, img);
    benchmark::DoNotOptimize(img.pixels.data());
  }
}
BENCHMARK(BM_RandOp)->DenseRange(0, 14)->Unit(benchmark::kMicrosecond);

void BM_ColorJitter(benchmark::State& state) {
  const Image src = test_image();
  Image img;
  int64_t i = 0;
  for (auto _ : state) {
    img = src;
    Rng rng(data_key(2, 0, DataPurpose::Sample, i++));
    color_jitter(0.4, 0.4, 0.4, img, rng);
    benchmark::DoNotOptimize(img.pixels.data());
  }
}
BENCHMARK(BM_ColorJitter)->Unit(benchmark::kMicrosecond);

}  // namespace
