// Datasets, augmentation and the loader: Fashion-MNIST against numpy's reading (fixture of
// tools/reference/data.py), crafted IDX/CIFAR/PNG/JPEG files (good and bad) in a temporary folder,
// resize/normalise/mixup against PIL/torchvision/timm, augmentation invariants, and the loader's
// determinism across worker counts, epochs and resumes.
#include <png.h>
#include <turbojpeg.h>
#include <unistd.h>
#include <zlib.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "io/augment.h"
#include "io/dataset.h"
#include "io/decode.h"
#include "io/loader.h"
#include "io/random_resized_crop.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

namespace fs = std::filesystem;
using namespace mokd::data;
using test::expect_error;

using test::TempDir;

void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_TRUE(f);
  ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// An IDX file: magic 0 0 8 rank, big-endian dims, then the values.
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims,
                               const std::vector<uint8_t>& values) {
  std::vector<uint8_t> b = {0, 0, 8, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
  b.insert(b.end(), values.begin(), values.end());
  return b;
}

std::vector<uint8_t> pattern(size_t n, int mul = 7, int add = 3) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>((i * mul + add) & 0xFF);
  return v;
}

// ---------------------------------------------------------------- Fashion-MNIST

TEST(DataFashionMnist, TestSplitMatchesNumpyReading) {
  if (!fs::is_directory(kFashionMnistDir))
    GTEST_SKIP() << kFashionMnistDir
                 << " absent (install the Debian package dataset-fashion-mnist)";
  auto fx = test::load_fixture("data.safetensors");
  ASSERT_TRUE(fx.count("fashion_labels16"))
      << "fixture written without the dataset: rerun tools/make_reference.py data";
  auto ds = load_fashion_mnist(kFashionMnistDir, "test");
  EXPECT_EQ(ds->size(), fx["fashion_count"].to_vector_i64()[0]);
  EXPECT_EQ(ds->size(), 10000);
  EXPECT_EQ(ds->height(), 28);
  EXPECT_EQ(ds->width(), 28);
  EXPECT_EQ(ds->channels(), 1);
  EXPECT_EQ(ds->num_classes(), 10);
  EXPECT_EQ(ds->class_names()[9], "Ankle boot");
  for (int64_t l : ds->labels()) ASSERT_TRUE(l >= 0 && l < 10);
  std::vector<int64_t> first16(ds->labels().begin(), ds->labels().begin() + 16);
  EXPECT_EQ(first16, fx["fashion_labels16"].to_vector_i64());
  Sample s = ds->get(0);
  std::vector<float> expected = fx["fashion_image0"].to_vector();
  ASSERT_EQ(s.pixels.size(), expected.size());
  int64_t sum = 0;
  for (size_t i = 0; i < s.pixels.size(); ++i) {
    ASSERT_EQ(s.pixels[i], expected[i]) << "pixel " << i;
    sum += s.pixels[i];
  }
  EXPECT_EQ(sum, fx["fashion_sum0"].to_vector_i64()[0]);
  EXPECT_EQ(s.label, first16[0]);
}

TEST(DataFashionMnist, MissingDirectoryAndFilesNameThePath) {
  TempDir t;
  expect_error([&] { load_fashion_mnist(t.path("nope"), "train"); },
               {t.path("nope"), "dataset-fashion-mnist", "data.dir"});
  expect_error([&] { load_fashion_mnist(t.root(), "train"); },
               {t.path("train-images-idx3-ubyte.gz"), "not found", "dataset-fashion-mnist"});
  // Images present (raw), labels missing.
  write_bytes(t.path("t10k-images-idx3-ubyte"), idx_bytes({1, 2, 2}, {1, 2, 3, 4}));
  expect_error([&] { load_fashion_mnist(t.root(), "test"); },
               {t.path("t10k-labels-idx1-ubyte.gz"), "not found"});
  expect_error([&] { load_fashion_mnist(t.root(), "val"); }, {"val", "train"});
}

// ---------------------------------------------------------------- IDX

TEST(DataIdx, RoundTripGzippedAndRaw) {
  TempDir t;
  const std::vector<uint8_t> pix = pattern(5 * 3 * 4);
  const std::vector<uint8_t> lab = {2, 0, 1, 2, 1};
  write_gz(t.path("img.gz"), idx_bytes({5, 3, 4}, pix));
  write_gz(t.path("lab.gz"), idx_bytes({5}, lab));
  write_bytes(t.path("img"), idx_bytes({5, 3, 4}, pix));
  write_bytes(t.path("lab"), idx_bytes({5}, lab));
  for (auto [ip, lp] :
       {std::pair{"img.gz", "lab.gz"}, std::pair{"img", "lab"}, std::pair{"img.gz", "lab"}}) {
    auto ds = load_idx(t.path(ip), t.path(lp));
    ASSERT_EQ(ds->size(), 5);
    EXPECT_EQ(ds->height(), 3);
    EXPECT_EQ(ds->width(), 4);
    EXPECT_EQ(ds->channels(), 1);
    EXPECT_EQ(ds->num_classes(), 3);  // inferred: max label + 1
    EXPECT_EQ(ds->pixels(), pix);
    for (int64_t i = 0; i < 5; ++i) {
      Sample s = ds->get(i);
      EXPECT_EQ(s.label, lab[i]);
      EXPECT_TRUE(std::equal(s.pixels.begin(), s.pixels.end(), pix.begin() + i * 12));
    }
  }
  // A rank-4 image file carries channels.
  write_bytes(t.path("img4"), idx_bytes({5, 2, 2, 3}, pattern(60)));
  auto ds4 = load_idx(t.path("img4"), t.path("lab"), 10);
  EXPECT_EQ(ds4->channels(), 3);
  EXPECT_EQ(ds4->num_classes(), 10);
  expect_error([&] { ds4->get(5); }, {"index 5"});
}

TEST(DataIdx, BadFilesNameTheFileAndOffset) {
  TempDir t;
  write_gz(t.path("lab.gz"), idx_bytes({2}, {0, 1}));
  const std::string lab = t.path("lab.gz");
  // Bad magic.
  std::vector<uint8_t> bad = idx_bytes({2, 2, 2}, pattern(8));
  bad[0] = 0x1F;
  write_gz(t.path("magic.gz"), bad);
  expect_error([&] { load_idx(t.path("magic.gz"), lab); },
               {t.path("magic.gz"), "magic", "byte offset 0"});
  // Unsupported element type.
  bad = idx_bytes({2, 2, 2}, pattern(8));
  bad[2] = 0x0D;
  write_bytes(t.path("type"), bad);
  expect_error([&] { load_idx(t.path("type"), lab); }, {t.path("type"), "byte offset 2"});
  // Dims that do not match the byte count: truncated data, trailing bytes, truncated header.
  write_gz(t.path("short.gz"), idx_bytes({2, 2, 2}, pattern(7)));
  expect_error(
      [&] { load_idx(t.path("short.gz"), lab); },
      {t.path("short.gz"), "2 x 2 x 2 = 8 bytes", "7 bytes", "truncated at byte offset 23"});
  write_bytes(t.path("long"), idx_bytes({2, 2, 2}, pattern(9)));
  expect_error([&] { load_idx(t.path("long"), lab); },
               {t.path("long"), "trailing bytes at byte offset 24"});
  write_bytes(t.path("hdr"), std::vector<uint8_t>{0, 0, 8, 3, 0, 0, 0, 2, 0});
  expect_error([&] { load_idx(t.path("hdr"), lab); },
               {t.path("hdr"), "truncated IDX header", "byte offset 16"});
  // Label count != image count.
  write_gz(t.path("img3.gz"), idx_bytes({3, 2, 2}, pattern(12)));
  expect_error([&] { load_idx(t.path("img3.gz"), lab); },
               {lab, "2 labels", "byte offset 4", "3 images"});
  // Label >= num classes.
  write_gz(t.path("img2.gz"), idx_bytes({2, 2, 2}, pattern(8)));
  write_bytes(t.path("lab_big"), idx_bytes({2}, {1, 10}));
  expect_error([&] { load_idx(t.path("img2.gz"), t.path("lab_big"), 10); },
               {t.path("lab_big"), "label 10", "byte offset 9", ">= the number of classes 10"});
  // A gzip stream cut short, and garbage after a gzip magic.
  std::vector<uint8_t> gz = read_bytes(t.path("img2.gz"));
  std::vector<uint8_t> cut(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2));
  write_bytes(t.path("cut.gz"), cut);
  expect_error([&] { load_idx(t.path("cut.gz"), lab); },
               {t.path("cut.gz"), "gzip error", "byte offset"});
  std::vector<uint8_t> corrupt = gz;
  for (size_t i = 10; i < corrupt.size() - 8; ++i) corrupt[i] ^= 0x5A;
  write_bytes(t.path("corrupt.gz"), corrupt);
  expect_error([&] { load_idx(t.path("corrupt.gz"), lab); }, {t.path("corrupt.gz"), "byte offset"});
  // Dims whose product wraps 64 bits (2^24 * 2^16 * 2^24 = 2^64 -> 0) must not pass as an empty
  // array: the check comes before each multiplication.
  write_bytes(t.path("wrap"), idx_bytes({1u << 24, 1u << 16, 1u << 24}, {}));
  expect_error([&] { load_idx(t.path("wrap"), lab); },
               {t.path("wrap"), "dimension 2", "byte offset 12", "implausibly large"});
  // Missing file.
  expect_error([&] { load_idx(t.path("absent.gz"), lab); }, {t.path("absent.gz"), "not found"});
}

// ---------------------------------------------------------------- CIFAR

// Records of CIFAR-10 (1 label byte) or CIFAR-100 (coarse, fine) with CHW planes from `pattern`.
std::vector<uint8_t> cifar_records(int n, bool c100, int first_label,
                                   std::vector<uint8_t>* hwc_out) {
  std::vector<uint8_t> bytes;
  for (int r = 0; r < n; ++r) {
    if (c100) bytes.push_back(static_cast<uint8_t>(r % 20));
    bytes.push_back(static_cast<uint8_t>((first_label + r) % (c100 ? 100 : 10)));
    std::vector<uint8_t> chw = pattern(3072, 13 + r, r);
    bytes.insert(bytes.end(), chw.begin(), chw.end());
    for (int p = 0; p < 1024; ++p)
      for (int ch = 0; ch < 3; ++ch) hwc_out->push_back(chw[ch * 1024 + p]);
  }
  return bytes;
}

TEST(DataCifar, RoundTrip10And100) {
  TempDir t;
  std::vector<uint8_t> hwc;
  std::vector<int64_t> labels;
  for (int b = 1; b <= 5; ++b) {
    write_bytes(t.path("data_batch_" + std::to_string(b) + ".bin"),
                cifar_records(2, false, 3 * b, &hwc));
    labels.push_back((3 * b) % 10);
    labels.push_back((3 * b + 1) % 10);
  }
  std::vector<uint8_t> test_hwc;
  write_bytes(t.path("test_batch.bin"), cifar_records(3, false, 7, &test_hwc));
  auto train = load_cifar(t.root(), 10, "train");
  ASSERT_EQ(train->size(), 10);
  EXPECT_EQ(train->height(), 32);
  EXPECT_EQ(train->channels(), 3);
  EXPECT_EQ(train->num_classes(), 10);
  EXPECT_EQ(train->pixels(), hwc);
  EXPECT_EQ(train->labels(), labels);
  auto test = load_cifar(t.root(), 10, "test");
  EXPECT_EQ(test->size(), 3);
  EXPECT_EQ(test->pixels(), test_hwc);
  EXPECT_EQ(test->labels(), (std::vector<int64_t>{7, 8, 9}));

  // CIFAR-100 in its archive's subfolder, fine labels and names from fine_label_names.txt.
  std::vector<uint8_t> hwc100;
  write_bytes(t.path("c100/cifar-100-binary/train.bin"), cifar_records(4, true, 97, &hwc100));
  std::ofstream names(t.path("c100/cifar-100-binary/fine_label_names.txt"));
  for (int k = 0; k < 100; ++k) names << "class" << k << "\n";
  names.close();
  auto c100 = load_cifar(t.path("c100"), 100, "train");
  EXPECT_EQ(c100->size(), 4);
  EXPECT_EQ(c100->num_classes(), 100);
  EXPECT_EQ(c100->labels(), (std::vector<int64_t>{97, 98, 99, 0}));
  EXPECT_EQ(c100->pixels(), hwc100);
  EXPECT_EQ(c100->class_names()[98], "class98");
}

TEST(DataCifar, BadFilesNameTheFileAndOffset) {
  TempDir t;
  std::vector<uint8_t> hwc;
  expect_error([&] { load_cifar(t.path("none"), 10, "test"); },
               {t.path("none"), "CIFAR-10", "test_batch.bin"});
  expect_error([&] { load_cifar(t.root(), 10, "test"); }, {t.path("test_batch.bin"), "not found"});
  std::vector<uint8_t> rec = cifar_records(2, false, 0, &hwc);
  rec.resize(rec.size() - 100);
  write_bytes(t.path("test_batch.bin"), rec);
  expect_error([&] { load_cifar(t.root(), 10, "test"); },
               {t.path("test_batch.bin"), "3073-byte", "truncated record at byte offset 3073"});
  rec = cifar_records(2, false, 0, &hwc);
  rec[3073] = 12;  // the second record's label
  write_bytes(t.path("test_batch.bin"), rec);
  expect_error([&] { load_cifar(t.root(), 10, "test"); },
               {t.path("test_batch.bin"), "label 12", "byte offset 3073"});
  expect_error([&] { load_cifar(t.root(), 20, "test"); }, {"10 or 100"});
}

// ---------------------------------------------------------------- ImageFolder

void write_png(const std::string& path, int h, int w, const std::vector<uint8_t>& rgb) {
  fs::create_directories(fs::path(path).parent_path());
  png_image img;
  std::memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = w;
  img.height = h;
  img.format = PNG_FORMAT_RGB;
  ASSERT_TRUE(png_image_write_to_file(&img, path.c_str(), 0, rgb.data(), 0, nullptr))
      << img.message;
}

void write_jpeg(const std::string& path, int h, int w, const std::vector<uint8_t>& rgb) {
  tjhandle tj = tjInitCompress();
  ASSERT_TRUE(tj);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  ASSERT_EQ(tjCompress2(tj, rgb.data(), w, 0, h, TJPF_RGB, &buf, &size, TJSAMP_444, 100, 0), 0)
      << tjGetErrorStr2(tj);
  write_bytes(path, std::vector<uint8_t>(buf, buf + size));
  tjFree(buf);
  tjDestroy(tj);
}

// Sample i of a split of encoded files, decoded to RGB.
Sample decoded(const Dataset& ds, int64_t i) {
  RawSample raw;
  ds.fetch(i, &raw);
  EXPECT_TRUE(raw.encoded);
  Sample s;
  s.pixels = decode_image(raw.bytes.data(), raw.bytes.size(), ds.source(i)).pixels;
  s.label = raw.label;
  return s;
}

TEST(DataImageFolder, DecodesPngAndJpegWithSortedClasses) {
  TempDir t;
  const int s = 6;
  std::vector<uint8_t> a = pattern(s * s * 3, 5, 1), b = pattern(s * s * 3, 11, 50);
  // A smooth image survives JPEG at quality 100 within a few levels.
  std::vector<uint8_t> smooth(s * s * 3);
  for (int y = 0; y < s; ++y)
    for (int x = 0; x < s; ++x)
      for (int c = 0; c < 3; ++c)
        smooth[(y * s + x) * 3 + c] = static_cast<uint8_t>(60 + 10 * c + 4 * x + 3 * y);
  write_png(t.path("zebra/b.png"), s, s, b);
  write_png(t.path("ant/x.PNG"), s, s, a);
  write_jpeg(t.path("ant/y.jpg"), s, s, smooth);
  write_bytes(t.path("ant/notes.txt"), {'h', 'i'});
  fs::create_directories(t.path("empty"));
  auto ds = open_image_folder(t.root());
  ASSERT_EQ(ds->size(), 3);
  EXPECT_EQ(ds->num_classes(), 2);
  EXPECT_EQ(ds->class_names(), (std::vector<std::string>{"ant", "zebra"}));
  EXPECT_EQ(ds->channels(), 3);
  Sample x = decoded(*ds, 0), y = decoded(*ds, 1), z = decoded(*ds, 2);
  EXPECT_EQ(ds->source(2), t.path("zebra/b.png"));
  EXPECT_EQ(x.label, 0);
  EXPECT_EQ(y.label, 0);
  EXPECT_EQ(z.label, 1);
  EXPECT_EQ(x.pixels, a);
  EXPECT_EQ(z.pixels, b);
  int worst = 0;
  for (size_t i = 0; i < smooth.size(); ++i)
    worst = std::max(worst, std::abs(int(y.pixels[i]) - int(smooth[i])));
  EXPECT_LE(worst, 3) << "JPEG q100 4:4:4 of a smooth ramp";
}

TEST(DataImageFolder, CorruptImagesNameTheFile) {
  TempDir t;
  std::vector<uint8_t> img = pattern(8 * 8 * 3);
  write_png(t.path("c/good.png"), 8, 8, img);
  write_jpeg(t.path("c/good.jpg"), 8, 8, img);
  std::vector<uint8_t> png = read_bytes(t.path("c/good.png"));
  std::vector<uint8_t> jpg = read_bytes(t.path("c/good.jpg"));
  write_bytes(t.path("c/trunc.png"),
              std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2));
  write_bytes(t.path("c/trunc.jpg"),
              std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2));
  std::vector<uint8_t> badjpg = jpg;
  badjpg.resize(40);  // inside the headers
  write_bytes(t.path("c/hdr.jpeg"), badjpg);
  write_bytes(t.path("c/text.png"), {'n', 'o', 't', ' ', 'a', 'n', ' ', 'i', 'm', 'a', 'g', 'e'});
  auto ds = open_image_folder(t.root());
  ASSERT_EQ(ds->size(), 6);  // sorted: good.jpg, good.png, hdr.jpeg, text.png, trunc.jpg, trunc.png
  EXPECT_NO_THROW(decoded(*ds, 0));
  EXPECT_NO_THROW(decoded(*ds, 1));
  expect_error([&] { decoded(*ds, 2); }, {t.path("c/hdr.jpeg"), "JPEG"});
  expect_error([&] { decoded(*ds, 3); }, {t.path("c/text.png"), "not a JPEG or PNG"});
  expect_error([&] { decoded(*ds, 4); }, {t.path("c/trunc.jpg"), "truncated JPEG"});
  expect_error([&] { decoded(*ds, 5); }, {t.path("c/trunc.png"), "truncated PNG"});
  expect_error([&] { open_image_folder(t.path("absent")); }, {t.path("absent"), "not found"});
  fs::create_directories(t.path("bare/cls"));
  expect_error([&] { open_image_folder(t.path("bare")); }, {t.path("bare"), "no images"});
}

// ---------------------------------------------------------------- augmentation

TEST(AugmentFlip, TwiceIsIdentityAndMirrors) {
  for (auto [h, w, c] : {std::tuple{3, 5, 3}, std::tuple{4, 4, 1}, std::tuple{1, 1, 2}}) {
    std::vector<uint8_t> img = pattern(h * w * c), f = img;
    hflip_inplace(f.data(), h, w, c);
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x)
        for (int k = 0; k < c; ++k)
          ASSERT_EQ(f[(y * w + x) * c + k], img[(y * w + (w - 1 - x)) * c + k]);
    hflip_inplace(f.data(), h, w, c);
    EXPECT_EQ(f, img);
  }
}

TEST(AugmentCrop, PaddedCropKeepsSizeAndShifts) {
  const int h = 5, w = 7, c = 2, p = 3;
  std::vector<uint8_t> img = pattern(h * w * c, 3, 1), out(h * w * c);
  for (int top = 0; top <= 2 * p; ++top)
    for (int left = 0; left <= 2 * p; ++left) {
      crop_with_padding(img.data(), h, w, c, p, top, left, out.data());
      for (int y = 0; y < h; ++y)
        for (int x = 0; x < w; ++x)
          for (int k = 0; k < c; ++k) {
            int sy = y + top - p, sx = x + left - p;
            uint8_t e = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? img[(sy * w + sx) * c + k] : 0;
            ASSERT_EQ(out[(y * w + x) * c + k], e) << top << "," << left;
          }
    }
  crop_with_padding(img.data(), h, w, c, p, p, p, out.data());
  EXPECT_EQ(out, img);
  // Random offsets cover [0, 2p] each.
  std::set<int64_t> seen;
  Rng rng(data_key(1, 0, DataPurpose::Sample, 0));
  for (int i = 0; i < 400; ++i) seen.insert(rng.randint(0, 2 * p + 1));
  EXPECT_EQ(seen.size(), size_t(2 * p + 1));
  EXPECT_EQ(*seen.begin(), 0);
  EXPECT_EQ(*seen.rbegin(), 2 * p);
}

std::vector<uint8_t> fixture_u8(const Tensor& t) {
  std::vector<float> v = t.to_vector();
  return std::vector<uint8_t>(v.begin(), v.end());
}

TEST(AugmentResize, MatchesPilBilinearExactly) {
  test::Fixture fx("data.safetensors");  // tools/reference/data.py
  std::vector<uint8_t> in = fixture_u8(fx["resize_input"]);
  const int h = static_cast<int>(fx.param_iv("image").at(0)),
            w = static_cast<int>(fx.param_iv("image").at(1));
  struct Case {
    std::string name;
    Box box;
    int oh, ow;
  };
  // Crop box (top, left, height, width) and output size (h, w) of each case from the params.
  auto resize_case = [&](const std::string& name) {
    auto b = fx.param_iv("resize." + name + ".box"), o = fx.param_iv("resize." + name + ".size");
    return Case{name,
                {b.at(0), b.at(1), b.at(2), b.at(3)},
                static_cast<int>(o.at(0)),
                static_cast<int>(o.at(1))};
  };
  for (const Case& cs : {resize_case("resize_down_6x8"), resize_case("resize_up_29x31"),
                         resize_case("resize_box_7x5")}) {
    std::vector<uint8_t> out(cs.oh * cs.ow * 3);
    resize_bilinear(in.data(), h, w, 3, cs.box, cs.oh, cs.ow, out.data());
    std::vector<uint8_t> ref = fixture_u8(fx[cs.name]);
    ASSERT_EQ(ref.size(), out.size()) << cs.name;
    int worst = 0;
    for (size_t i = 0; i < out.size(); ++i)
      worst = std::max(worst, std::abs(int(out[i]) - int(ref[i])));
    EXPECT_EQ(worst, 0) << cs.name;
  }
  // Same size: the identity.
  std::vector<uint8_t> same(in.size());
  resize_bilinear(in.data(), h, w, 3, Box{0, 0, h, w}, h, w, same.data());
  EXPECT_EQ(same, in);
  expect_error(
      [&] {
        resize_bilinear(in.data(), h, w, 3, Box{5, 0, 9, w}, 4, 4, same.data());
      },
      {"outside"});
}

TEST(AugmentNormalize, MatchesTorchvision) {
  test::Fixture fx("data.safetensors");
  std::vector<uint8_t> in = fixture_u8(fx["resize_input"]);
  const std::vector<int64_t> hwc = fx.param_iv("image");
  Normalize norm{fx["norm_mean"].to_vector(), fx["norm_std"].to_vector()};
  std::vector<float> out(in.size());
  normalize(in.data(), hwc.at(0) * hwc.at(1), hwc.at(2), normalize_table(norm, hwc.at(2)),
            out.data());
  test::expect_close(Tensor::from_vector(out, {hwc.at(0), hwc.at(1), hwc.at(2)}), fx["norm_out"],
                     1e-6, 1e-6, "normalize");
  expect_error([&] { normalize_table(Normalize{{0.5f}, {0.5f}}, 3); }, {"one per channel"});
}

TEST(AugmentRng, GammaAndBetaMoments) {
  Rng rng(data_key(11, 0, DataPurpose::Batch, 0));
  for (double a : {0.2, 0.8, 1.0, 3.0}) {
    const int n = 20000;
    double s = 0, s2 = 0, g = 0;
    for (int i = 0; i < n; ++i) {
      double x = rng.beta(a, a);
      ASSERT_TRUE(x >= 0 && x <= 1);
      s += x;
      s2 += x * x;
      g += rng.gamma(a);
    }
    double mean = s / n, var = s2 / n - mean * mean;
    EXPECT_NEAR(mean, 0.5, 0.02) << a;
    EXPECT_NEAR(var, 1.0 / (4 * (2 * a + 1)), 0.01) << a;  // Beta(a, a) variance
    EXPECT_NEAR(g / n, a, 0.05 * std::max(1.0, a)) << a;   // Gamma(a, 1) mean
  }
}

TEST(AugmentMixup, TargetsMatchTimm) {
  test::Fixture fx("data.safetensors");
  std::vector<int64_t> labels = fx["mixup_labels"].to_vector_i64();
  const int64_t nc = fx.param_i("mixup.num_classes"), n = static_cast<int64_t>(labels.size());
  std::vector<float> soft(labels.size() * nc);
  mixup_targets(labels.data(), n, nc, fx.param_d("mixup.lam"), fx.param_d("mixup.smoothing"),
                soft.data());
  test::expect_close(Tensor::from_vector(soft, {n, nc}), fx["mixup_soft"], 1e-6, 1e-7,
                     "mixup_target");
}

// lam-weighted smoothed one-hots of (labels, flipped labels), in double.
void expect_soft_targets(const std::vector<float>& soft, const std::vector<int64_t>& labels,
                         int64_t nc, double lam, double s) {
  const int64_t n = static_cast<int64_t>(labels.size());
  for (int64_t i = 0; i < n; ++i) {
    double row = 0;
    for (int64_t k = 0; k < nc; ++k) {
      double y1 = (k == labels[i] ? 1 - s : 0) + s / nc,
             y2 = (k == labels[n - 1 - i] ? 1 - s : 0) + s / nc;
      EXPECT_NEAR(soft[i * nc + k], lam * y1 + (1 - lam) * y2, 1e-6);
      row += soft[i * nc + k];
    }
    EXPECT_NEAR(row, 1.0, 1e-5);
  }
}

TEST(AugmentMixup, MixupBlendsWithTheFlippedBatch) {
  const int64_t n = 5, h = 3, w = 4, c = 2, nc = 7;
  Tensor x = test::randn({n, h, w, c}, 3);
  std::vector<float> orig = x.to_vector(), img = orig;
  std::vector<int64_t> labels = {0, 6, 2, 2, 5};
  std::vector<float> soft(n * nc);
  MixupOptions opt;
  opt.mixup_alpha = 0.8;
  opt.label_smoothing = 0.1;
  Rng rng(data_key(1, 0, DataPurpose::Batch, 3));
  MixupResult r = mixup_batch(opt, img.data(), n, h, w, c, labels.data(), nc, rng, soft.data());
  EXPECT_FALSE(r.cutmix);
  ASSERT_GT(r.lam, 0.0);
  ASSERT_LT(r.lam, 1.0);
  const int64_t per = h * w * c;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < per; ++k)
      ASSERT_NEAR(img[i * per + k],
                  r.lam * orig[i * per + k] + (1 - r.lam) * orig[(n - 1 - i) * per + k], 1e-5);
  expect_soft_targets(soft, labels, nc, r.lam, 0.1);
  // prob 0: nothing mixed, targets are the smoothed one-hots.
  opt.prob = 0;
  img = orig;
  r = mixup_batch(opt, img.data(), n, h, w, c, labels.data(), nc, rng, soft.data());
  EXPECT_EQ(r.lam, 1.0);
  EXPECT_EQ(img, orig);
  expect_soft_targets(soft, labels, nc, 1.0, 0.1);
}

TEST(AugmentMixup, CutmixLambdaIsCorrectedByTheBoxArea) {
  const int64_t n = 4, h = 9, w = 11, c = 3, nc = 4;
  Tensor x = test::randn({n, h, w, c}, 4);
  std::vector<float> orig = x.to_vector();
  std::vector<int64_t> labels = {1, 3, 0, 2};
  MixupOptions opt;
  opt.mixup_alpha = 0.8;
  opt.cutmix_alpha = 1.0;
  opt.switch_prob = 1.0;  // always cutmix
  int boxes = 0;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<float> img = orig, soft(n * nc);
    Rng rng(data_key(2, 0, DataPurpose::Batch, trial));
    MixupResult r = mixup_batch(opt, img.data(), n, h, w, c, labels.data(), nc, rng, soft.data());
    ASSERT_TRUE(r.cutmix);
    const Box& b = r.box;
    EXPECT_NEAR(r.lam, 1.0 - double(b.height * b.width) / double(h * w), 1e-12);
    boxes += b.height * b.width > 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t y = 0; y < h; ++y)
        for (int64_t xx = 0; xx < w; ++xx) {
          bool in = y >= b.top && y < b.top + b.height && xx >= b.left && xx < b.left + b.width;
          int64_t src = in ? n - 1 - i : i;
          for (int64_t k = 0; k < c; ++k)
            ASSERT_EQ(img[((i * h + y) * w + xx) * c + k], orig[((src * h + y) * w + xx) * c + k]);
        }
    expect_soft_targets(soft, labels, nc, r.lam, 0.0);
  }
  EXPECT_GT(boxes, 10);
}

// ---------------------------------------------------------------- loader

// Image i is filled with (i * 37 + offset) mod 251 and labelled i mod classes: batches reveal the
// order.
std::unique_ptr<InMemoryDataset> synthetic(int64_t n, int64_t h, int64_t w, int64_t c,
                                           int64_t classes) {
  std::vector<uint8_t> pix(n * h * w * c);
  std::vector<int64_t> labels(n);
  for (int64_t i = 0; i < n; ++i) {
    labels[i] = i % classes;
    for (int64_t k = 0; k < h * w * c; ++k)
      pix[i * h * w * c + k] = static_cast<uint8_t>((i * 37 + k * 5) % 251);
  }
  std::vector<std::string> names;
  for (int64_t k = 0; k < classes; ++k) names.push_back(std::to_string(k));
  return std::make_unique<InMemoryDataset>(h, w, c, names, std::move(pix), std::move(labels));
}

std::vector<Batch> read_epoch(Loader& l, int64_t epoch, int64_t start = 0) {
  l.start_epoch(epoch, start);
  std::vector<Batch> out;
  Batch b;
  while (l.next(b)) out.push_back(b);
  return out;
}

bool same_tensor(const Tensor& a, const Tensor& b) {
  if (a.defined() != b.defined()) return false;
  if (!a.defined()) return true;
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw_data(), b.raw_data(), a.nbytes()) == 0;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b,
                         const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, b[i].index) << what;
    EXPECT_TRUE(same_tensor(a[i].images(), b[i].images())) << what << " batch " << i;
    EXPECT_TRUE(same_tensor(a[i].labels, b[i].labels)) << what << " batch " << i;
    EXPECT_TRUE(same_tensor(a[i].soft_targets, b[i].soft_targets)) << what << " batch " << i;
  }
}

LoaderOptions augmented_options(int workers) {
  LoaderOptions o;
  o.batch_size = 6;
  o.seed = 42;
  o.num_workers = workers;
  o.prefetch = 3;
  o.transform.train = true;
  o.transform.interpolation = Interpolation::Bilinear;
  o.transform.augment.crop_padding = 2;
  o.transform.augment.hflip = true;
  o.transform.augment.random_resized_crop = true;
  o.transform.height = 7;
  o.transform.width = 5;
  o.mixup.mixup_alpha = 0.8;
  o.mixup.cutmix_alpha = 1.0;
  o.mixup.label_smoothing = 0.1;
  o.normalize = {{0.5f, 0.4f}, {0.2f, 0.3f}};
  return o;
}

TEST(LoaderDeterminism, SameSeedSameBatchesWhateverTheWorkers) {
  auto ds = synthetic(40, 9, 8, 2, 5);
  Loader l0(*ds, augmented_options(0)), l1(*ds, augmented_options(1)),
      l3(*ds, augmented_options(3));
  EXPECT_EQ(l0.batches_per_epoch(), 7);
  auto a = read_epoch(l0, 3), b = read_epoch(l1, 3), c = read_epoch(l3, 3);
  ASSERT_EQ(a.size(), 7u);
  EXPECT_EQ(a[0].images().shape(), (Shape{6, 7, 5, 2}));
  EXPECT_EQ(a[6].images().shape(), (Shape{4, 7, 5, 2}));  // the partial last batch
  EXPECT_EQ(a[0].soft_targets.shape(), (Shape{6, 5}));
  EXPECT_EQ(a[2].epoch, 3);
  expect_same_batches(a, b, "0 vs 1 workers");
  expect_same_batches(a, c, "0 vs 3 workers");
  // A fresh loader with the same seed repeats them; another seed does not.
  Loader again(*ds, augmented_options(3));
  expect_same_batches(a, read_epoch(again, 3), "repeat");
  LoaderOptions other = augmented_options(3);
  other.seed = 43;
  Loader l_other(*ds, other);
  auto d = read_epoch(l_other, 3);
  EXPECT_FALSE(same_tensor(a[0].images(), d[0].images()));
}

TEST(LoaderDeterminism, SampleRandomnessIsKeyedBySeedEpochAndPosition) {
  // Every image identical: differences between rows come from the augmentation alone.
  const int64_t n = 30, h = 9, w = 8, c = 2;
  std::vector<uint8_t> pix;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<uint8_t> one = pattern(h * w * c, 5, 9);
    pix.insert(pix.end(), one.begin(), one.end());
  }
  InMemoryDataset ds(h, w, c, {"a", "b"}, pix, std::vector<int64_t>(n, 1));
  LoaderOptions o = augmented_options(2);
  o.mixup = MixupOptions{};
  Loader l(ds, o);
  auto batches = read_epoch(l, 4);
  std::vector<int64_t> order = epoch_permutation(o.seed, 4, n);
  std::set<std::vector<float>> distinct;
  const std::vector<float> table = normalize_table(o.normalize, c);
  std::vector<uint8_t> raw(h * w * c), aug(7 * 5 * c), scratch;
  std::vector<float> expect(7 * 5 * c);
  for (const Batch& b : batches) {
    std::vector<float> v = b.images().to_vector();
    const int64_t per = 7 * 5 * c;
    for (int64_t i = 0; i < b.size(); ++i) {
      const int64_t pos = b.index * o.batch_size + i;
      std::vector<float> row(v.begin() + i * per, v.begin() + (i + 1) * per);
      distinct.insert(row);
      // The documented recipe: the sample at `pos` of the epoch order, augmented with the key
      // (seed, epoch, Sample, pos), then normalised.
      int64_t label;
      ds.read(order[pos], raw.data(), &label);
      // Composed here from the primitives: RandomResizedCrop (bilinear) to 7 x 5, padded crop,
      // flip.
      Rng rng(data_key(o.seed, 4, DataPurpose::Sample, pos));
      const AugmentOptions& a = o.transform.augment;
      Box box = sample_resized_crop(h, w, a.scale_min, a.scale_max, a.ratio_min, a.ratio_max, rng);
      scratch.resize(aug.size());
      resize_bilinear(raw.data(), h, w, c, box, 7, 5, scratch.data());
      random_crop_with_padding(scratch.data(), 7, 5, c, a.crop_padding, rng, aug.data());
      if (rng.uniform() < 0.5) hflip_inplace(aug.data(), 7, 5, c);
      normalize(aug.data(), 7 * 5, c, table, expect.data());
      ASSERT_EQ(row, expect) << "position " << pos;
    }
  }
  EXPECT_GT(distinct.size(), 20u) << "augmentations repeat across positions";
}

TEST(LoaderEpochs, EachEpochIsADifferentPermutation) {
  auto ds = synthetic(50, 2, 2, 1, 50);  // label = index
  LoaderOptions o;
  o.batch_size = 8;
  o.seed = 7;
  o.num_workers = 2;
  Loader l(*ds, o);
  std::vector<std::vector<int64_t>> orders;
  for (int64_t e = 0; e < 3; ++e) {
    std::vector<int64_t> order;
    for (const Batch& b : read_epoch(l, e)) {
      auto v = b.labels.to_vector_i64();
      order.insert(order.end(), v.begin(), v.end());
    }
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int64_t i = 0; i < 50; ++i)
      ASSERT_EQ(sorted[i], i) << "epoch " << e << " is not a permutation";
    orders.push_back(order);
  }
  EXPECT_NE(orders[0], orders[1]);
  EXPECT_NE(orders[1], orders[2]);
  // No shuffle: the dataset order; drop_last drops the partial batch.
  o.shuffle = false;
  o.drop_last = true;
  Loader plain(*ds, o);
  EXPECT_EQ(plain.batches_per_epoch(), 6);
  auto batches = read_epoch(plain, 1);
  ASSERT_EQ(batches.size(), 6u);
  EXPECT_EQ(batches[5].labels.to_vector_i64(),
            (std::vector<int64_t>{40, 41, 42, 43, 44, 45, 46, 47}));
  EXPECT_FALSE(batches[0].soft_targets.defined());
  // Pixels are normalised x / 255.
  EXPECT_FLOAT_EQ(batches[0].images().to_vector()[1], float((0 * 37 + 5) % 251) / 255.f);
  Batch b;
  EXPECT_FALSE(plain.next(b));  // the epoch is over until start_epoch
}

TEST(LoaderResume, StartingAtBatchKEqualsReadingThrough) {
  auto ds = synthetic(45, 9, 8, 2, 5);
  for (int workers : {0, 2}) {
    Loader l(*ds, augmented_options(workers));
    auto full = read_epoch(l, 2);
    // Consume a few batches of another epoch first: the order must not depend on it.
    l.start_epoch(5);
    Batch tmp;
    l.next(tmp);
    l.next(tmp);
    for (int64_t k : {0, 3, 7, 8}) {
      auto rest = read_epoch(l, 2, k);
      std::vector<Batch> tail(full.begin() + k, full.end());
      expect_same_batches(rest, tail, "resume at " + std::to_string(k));
    }
    expect_error([&] { l.start_epoch(2, 9); }, {"start_batch 9", "[0, 8]"});
  }
}

// Throws on one index, to test that a worker's exception reaches the consumer.
class FailingDataset final : public Dataset {
 public:
  explicit FailingDataset(int64_t bad) : bad_(bad) {}
  int64_t size() const override { return 20; }
  int64_t height() const override { return 2; }
  int64_t width() const override { return 2; }
  int64_t channels() const override { return 1; }
  int64_t num_classes() const override { return 2; }
  const std::vector<std::string>& class_names() const override { return names_; }
  std::string location() const override { return "/data"; }
  std::string source(int64_t index) const override {
    return "/data/broken_" + std::to_string(index) + ".jpg";
  }
  void fetch(int64_t index, RawSample* out) const override {
    if (index == bad_) throw Error(source(index) + ": corrupt JPEG (test)");
    out->bytes.assign(4, static_cast<uint8_t>(index));
    out->encoded = false;
    out->height = out->width = 2;
    out->channels = 1;
    out->label = index % 2;
  }

 private:
  int64_t bad_;
  std::vector<std::string> names_{"a", "b"};
};

TEST(LoaderErrors, WorkerExceptionsReachTheConsumer) {
  FailingDataset ds(13);
  for (int workers : {0, 1, 3}) {
    LoaderOptions o;
    o.batch_size = 4;
    o.shuffle = false;
    o.num_workers = workers;
    o.prefetch = 2;
    Loader l(ds, o);
    l.start_epoch(0);
    Batch b;
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(l.next(b)) << workers;  // batches 0..2 are fine
    expect_error([&] { l.next(b); }, {"/data/broken_13.jpg", "corrupt JPEG"});
    // The loader is reusable after a failure: another epoch, started past the bad batch.
    l.start_epoch(1, 4);
    ASSERT_TRUE(l.next(b));
    EXPECT_EQ(b.index, 4);
  }
  // Destroying a loader mid-epoch with workers still prefetching is clean.
  auto big = synthetic(500, 8, 8, 3, 10);
  for (int i = 0; i < 5; ++i) {
    LoaderOptions o;
    o.batch_size = 16;
    o.num_workers = 3;
    Loader l(*big, o);
    Batch b;
    l.next(b);
  }
  LoaderOptions bad;
  bad.batch_size = 0;
  expect_error([&] { Loader l(*big, bad); }, {"batch_size"});
}

// data.bad_samples = "skip": the next sample of the order stands in, the same whatever the workers.
TEST(LoaderErrors, SkippedSamplesAreReplacedByTheNextOne) {
  FailingDataset ds(13);
  for (int workers : {0, 3}) {
    LoaderOptions o;
    o.batch_size = 4;
    o.shuffle = false;
    o.num_workers = workers;
    o.skip_bad_samples = true;
    Loader l(ds, o);
    Batch b;
    int batches = 0;
    while (l.next(b)) {
      if (b.index == 3) {  // rows 12..15: 13 is broken, 14 stands in
        std::vector<float> v = b.images().to_vector();
        EXPECT_EQ(v[4], 14.f / 255.f) << workers;
        EXPECT_EQ(b.labels.to_vector()[1], 0.f) << workers;
        EXPECT_EQ(v[0], 12.f / 255.f);
      }
      ++batches;
    }
    EXPECT_EQ(batches, 5);
    EXPECT_EQ(l.bad_samples(), 1) << workers;
  }
  LoaderOptions fatal;
  fatal.batch_size = 4;
  fatal.shuffle = false;
  fatal.num_workers = 0;
  Loader l(ds, fatal);
  l.start_epoch(0, 3);
  Batch b;
  expect_error([&] { l.next(b); }, {"/data/broken_13.jpg", "1 unreadable", "data.bad_samples"});
}

TEST(LoaderSpeed, FashionMnistEpochWithCropFlipNormalise) {
  if (!fs::is_directory(kFashionMnistDir))
    GTEST_SKIP() << kFashionMnistDir
                 << " absent (install the Debian package dataset-fashion-mnist)";
  auto ds = load_fashion_mnist(kFashionMnistDir, "train");
  ASSERT_EQ(ds->size(), 60000);
  LoaderOptions o;
  o.batch_size = 256;
  o.seed = 1;
  o.num_workers = 2;
  o.transform.train = true;
  o.transform.augment.crop_padding = 4;
  o.transform.augment.hflip = true;
  o.normalize = {{0.2860f}, {0.3530f}};
  Loader l(*ds, o);
  auto t0 = std::chrono::steady_clock::now();
  l.start_epoch(0);
  Batch b;
  int64_t seen = 0;
  while (l.next(b)) seen += b.size();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(seen, 60000);
  EXPECT_LT(s, 2.0) << "a Fashion-MNIST epoch through the loader took " << s << " s";
  RecordProperty("epoch_seconds", std::to_string(s));
  std::printf(
      "[ LoaderSpeed ] Fashion-MNIST train epoch (crop+flip+normalise, 2 workers): %.3f s\n", s);
}

}  // namespace
}  // namespace mokd
