// The batch preparation (engine/image_batch.h, prepare_images): its oracle is the host
// composition the loader used before it existed, normalize() then random_erasing() per sample
// then mixup_batch() (io/augment.h, io/random_erasing.h), drawing from the same random streams;
// the CUDA backend must give the CPU's values. Also the u8 dtype's copies and conversions.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "engine/ops.h"
#include "io/augment.h"
#include "io/loader.h"
#include "io/random_erasing.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using namespace mokd::data;
using test::expect_error;

struct Case {
  int64_t n, h, w, c;
  EraseMode mode;
  int max_count;         // erase boxes per image: 1..max_count (probability 1)
  double mixup, cutmix;  // alphas
  uint64_t seed;
};

struct Prepared {
  Tensor pixels, table;
  std::vector<EraseBox> boxes;
  MixSpec mix;
  std::vector<float> expected;  // the host composition
};

// Random pixels; the plan and the oracle from copies of the same Rng per sample and per batch.
Prepared prepare_case(const Case& k) {
  Prepared p;
  const int64_t per = k.h * k.w * k.c;
  std::vector<uint8_t> px(static_cast<size_t>(k.n * per));
  Rng fill(RngKey{k.seed, 7});
  for (uint8_t& v : px) v = static_cast<uint8_t>(fill.u32() & 255);
  Normalize norm;
  for (int64_t ch = 0; ch < k.c; ++ch) {
    norm.mean.push_back(0.4f + 0.05f * static_cast<float>(ch));
    norm.std.push_back(0.2f + 0.03f * static_cast<float>(ch));
  }
  const std::vector<float> table = normalize_table(norm, k.c);
  p.pixels = Tensor::empty({k.n, k.h, k.w, k.c}, DType::U8);
  std::memcpy(p.pixels.raw_data(), px.data(), px.size());
  p.table = Tensor::from_vector(table, {k.c, 256});

  RandomErasingOptions eo;
  eo.probability = 1.0;
  eo.mode = k.mode;
  eo.min_area = 0.05;
  eo.max_area = 0.6;
  eo.min_count = 1;
  eo.max_count = k.max_count;
  p.expected.resize(px.size());
  for (int64_t i = 0; i < k.n; ++i) {
    normalize(px.data() + i * per, k.h * k.w, k.c, table, p.expected.data() + i * per);
    Rng a(RngKey{k.seed, static_cast<uint64_t>(1000 + i)}), b = a;
    random_erasing(eo, p.expected.data() + i * per, k.h, k.w, k.c, a);
    std::vector<EraseBox> plan = plan_random_erasing(eo, k.h, k.w, k.c, static_cast<int32_t>(i), b);
    EXPECT_EQ(a.position(), b.position()) << "the plan draws what random_erasing draws";
    p.boxes.insert(p.boxes.end(), plan.begin(), plan.end());
  }
  MixupOptions mo;
  mo.mixup_alpha = k.mixup;
  mo.cutmix_alpha = k.cutmix;
  std::vector<int64_t> labels(static_cast<size_t>(k.n), 0);
  Rng a(RngKey{k.seed, 99}), b = a;
  mixup_batch(mo, p.expected.data(), k.n, k.h, k.w, k.c, labels.data(), 2, a, nullptr);
  p.mix = mix_spec(sample_mixup(mo, k.h, k.w, b));
  EXPECT_EQ(a.position(), b.position()) << "sample_mixup draws what mixup_batch draws";
  return p;
}

std::vector<Case> cases() {
  return {
      {4, 7, 9, 3, EraseMode::Pixel, 3, 0, 0, 1},    // overlapping noise boxes, no mix
      {5, 7, 9, 3, EraseMode::Pixel, 2, 0.8, 0, 2},  // odd batch: the middle sample blends itself
      {4, 8, 6, 1, EraseMode::Rand, 3, 0, 1.0, 3},   // cutmix, one channel
      {3, 6, 5, 3, EraseMode::Const, 2, 0.8, 0, 4},
      {1, 5, 5, 2, EraseMode::Pixel, 1, 0.8, 0, 5},  // a batch of one blends with itself
      {6, 9, 7, 3, EraseMode::Pixel, 1, 0, 1.0, 6},
  };
}

TEST(ImageBatch, CpuEqualsNormaliseEraseMixComposition) {
  for (const Case& k : cases()) {
    Prepared p = prepare_case(k);
    ASSERT_FALSE(p.boxes.empty());
    ImageBatchParams params{p.boxes.data(), static_cast<int64_t>(p.boxes.size()), p.mix};
    const Tensor out = prepare_images(p.pixels, p.table, params);
    ASSERT_EQ(out.shape(), p.pixels.shape());
    EXPECT_EQ(std::memcmp(out.data<float>(), p.expected.data(), p.expected.size() * sizeof(float)),
              0)
        << "case seed " << k.seed;
  }
  // Each mode of mix was exercised.
  EXPECT_EQ(prepare_case(cases()[1]).mix.mode, MixMode::Blend);
  EXPECT_EQ(prepare_case(cases()[2]).mix.mode, MixMode::Cut);
}

TEST(ImageBatch, NoiseValuesAreTheSequentialBoxMullerPairs) {
  // A box of odd row length (3 x 5 x 1): the sequential stream drops each row's last sine.
  const uint64_t key = 0x1234abcdULL;
  Rng noise(RngKey{key, 0});
  for (int64_t ry = 0; ry < 3; ++ry)
    for (int64_t k = 0; k < 5; k += 2) {
      const double r = std::sqrt(-2.0 * std::log(1.0 - noise.uniform()));
      const double a = 2.0 * M_PI * noise.uniform();
      EXPECT_EQ(erase_noise(key, 5, ry, k), static_cast<float>(r * std::cos(a)));
      if (k + 1 < 5) EXPECT_EQ(erase_noise(key, 5, ry, k + 1), static_cast<float>(r * std::sin(a)));
    }
}

TEST(ImageBatch, BadArgumentsNameTheKernelAndTheArgument) {
  Tensor px = Tensor::zeros({2, 4, 4, 3}, DType::U8);
  Tensor table = Tensor::zeros({3, 256});
  ImageBatchParams none;
  expect_error(
      [&] {
        prepare_images(Tensor::zeros({2, 4, 4, 3}), table, none);
      },
      {"prepare_images", "pixels must be u8 [N, H, W, C]"});
  expect_error(
      [&] {
        prepare_images(px, Tensor::zeros({2, 256}), none);
      },
      {"prepare_images", "table must hold 256 values per channel (768)"});
  EraseBox outside;
  outside.sample = 1;
  outside.top = 2;
  outside.height = 3;
  outside.width = 1;
  ImageBatchParams p{&outside, 1, {}};
  expect_error([&] { prepare_images(px, table, p); },
               {"prepare_images", "erase box 0 (top 2, left 0, 3 x 1)"});
  EraseBox order[2];
  order[0].sample = 1;
  order[1].sample = 0;
  p = ImageBatchParams{order, 2, {}};
  expect_error([&] { prepare_images(px, table, p); },
               {"prepare_images", "grouped by sample in increasing order"});
  p = ImageBatchParams{};
  p.mix.mode = MixMode::Cut;
  p.mix.left = 3;
  p.mix.width = 2;
  expect_error([&] { prepare_images(px, table, p); },
               {"prepare_images", "cutmix box (top 0, left 3, 0 x 2)"});
  EraseBox one;
  p = ImageBatchParams{&one, 1, {}};
  expect_error(
      [&] {
        prepare_images(Tensor::zeros({1, 2, 2, 5}, DType::U8), Tensor::zeros({5, 256}), p);
      },
      {"prepare_images", "erasing takes at most 4 channels"});
}

TEST(ImageBatch, U8CopiesExactlyAndConvertsBySaturating) {
  Tensor f = Tensor::from_vector({-3.f, 0.f, 0.99f, 1.f, 7.9f, 254.5f, 255.f, 1000.f}, {8});
  Tensor u = f.to(DType::U8);
  ASSERT_EQ(u.dtype(), DType::U8);
  EXPECT_EQ(u.nbytes(), 8u);
  const uint8_t* b = static_cast<const uint8_t*>(u.raw_data());
  EXPECT_EQ(std::vector<int>(b, b + 8), (std::vector<int>{0, 0, 0, 1, 7, 254, 255, 255}));
  EXPECT_EQ(u.to(DType::F32).to_vector(), (std::vector<float>{0, 0, 0, 1, 7, 254, 255, 255}));
  EXPECT_STREQ(dtype_name(DType::U8), "u8");
}

// The loader hands out uint8 batches whose images() equal the host composition over the same
// random streams: normalise, erase (DataPurpose::Erase per position), mix (DataPurpose::Batch).
TEST(ImageBatch, LoaderBatchesEqualTheHostComposition) {
  const int64_t n = 30, h = 6, w = 5, c = 3, classes = 4;
  std::vector<uint8_t> pix(static_cast<size_t>(n * h * w * c));
  for (size_t k = 0; k < pix.size(); ++k) pix[k] = static_cast<uint8_t>((k * 29 + 3) % 256);
  std::vector<int64_t> labels(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) labels[static_cast<size_t>(i)] = i % classes;
  InMemoryDataset ds(h, w, c, {"a", "b", "c", "d"}, pix, labels);
  LoaderOptions o;
  o.batch_size = 7;
  o.seed = 5;
  o.num_workers = 2;
  o.transform.train = true;
  o.transform.augment.hflip = true;
  o.normalize = {{0.5f, 0.4f, 0.3f}, {0.2f, 0.3f, 0.25f}};
  o.random_erasing = true;
  o.erasing.probability = 0.7;
  o.erasing.max_count = 2;
  o.mixup.mixup_alpha = 0.8;
  o.mixup.cutmix_alpha = 1.0;
  o.mixup.label_smoothing = 0.1;
  Loader loader(ds, o);
  const std::vector<float> table = normalize_table(o.normalize, c);
  const int64_t per = h * w * c;
  int64_t erased = 0;
  bool blend = false, cut = false;
  for (int64_t epoch = 0; epoch < 3; ++epoch) {
    loader.start_epoch(epoch);
    Batch b;
    while (loader.next(b)) {
      const int64_t rows = b.size();
      ASSERT_EQ(b.pixels.dtype(), DType::U8);
      std::vector<float> expect(static_cast<size_t>(rows * per));
      const uint8_t* px = static_cast<const uint8_t*>(b.pixels.raw_data());
      for (int64_t i = 0; i < rows; ++i) {
        normalize(px + i * per, h * w, c, table, expect.data() + i * per);
        Rng r(data_key(o.seed, epoch, DataPurpose::Erase, b.index * o.batch_size + i));
        erased += !random_erasing(o.erasing, expect.data() + i * per, h, w, c, r).empty();
      }
      std::vector<float> soft(static_cast<size_t>(rows * classes));
      Rng r(data_key(o.seed, epoch, DataPurpose::Batch, b.index));
      const MixupResult m = mixup_batch(o.mixup, expect.data(), rows, h, w, c,
                                        b.labels.data<int64_t>(), classes, r, soft.data());
      blend |= m.mixed && !m.cutmix;
      cut |= m.mixed && m.cutmix;
      const Tensor images = b.images();
      ASSERT_EQ(images.shape(), (Shape{rows, h, w, c}));
      EXPECT_EQ(std::memcmp(images.data<float>(), expect.data(), expect.size() * sizeof(float)), 0)
          << "epoch " << epoch << " batch " << b.index;
      EXPECT_EQ(b.soft_targets.to_vector(), soft) << "epoch " << epoch << " batch " << b.index;
    }
  }
  EXPECT_GT(erased, 20);
  EXPECT_TRUE(blend && cut);
}

TEST(CudaImageBatch, PrepareImagesMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda();
  for (const Case& k : cases()) {
    Prepared p = prepare_case(k);
    ImageBatchParams params{p.boxes.data(), static_cast<int64_t>(p.boxes.size()), p.mix};
    const Tensor cpu = prepare_images(p.pixels, p.table, params);
    const Tensor dev = prepare_images(p.pixels.to(gpu), p.table.to(gpu), params);
    ASSERT_EQ(dev.device(), gpu);
    const std::vector<float> a = cpu.to_vector(), b = dev.to(Device::cpu()).to_vector();
    ASSERT_EQ(a.size(), b.size());
    // Table values, colours and the mix are exact; noise values go through the device's double
    // log / cos / sin (within 2 ulp in double), so they may differ in the last f32 bit.
    int64_t inexact = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      if (a[i] == b[i]) continue;
      ++inexact;
      EXPECT_NEAR(b[i], a[i], 1e-6 * std::max(1.f, std::fabs(a[i]))) << "element " << i;
    }
    EXPECT_LE(inexact, static_cast<int64_t>(a.size() / 1000)) << "case seed " << k.seed;
  }
  // uint8 round trip through the device.
  Tensor u = Tensor::from_vector({0.f, 17.f, 255.f}, {3}).to(DType::U8);
  Tensor back = u.to(gpu).to(Device::cpu());
  EXPECT_EQ(std::memcmp(back.raw_data(), u.raw_data(), 3), 0);
}

}  // namespace
}  // namespace mokd
