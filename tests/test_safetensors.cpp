// safetensors: round trips, the writer's layout, the PyTorch-written fixture, and every malformed
// file the reader must reject (crafted byte by byte in a temporary folder).
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

namespace mokd {
namespace {

namespace fs = std::filesystem;

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("mokd_safetensors_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes raw bytes.
  std::string write_bytes(const std::string& name, const std::string& bytes) const {
    std::string p = path(name);
    std::ofstream f(p, std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    return p;
  }
  // Writes an 8-byte length (the header's unless given), the header, then `data` bytes.
  std::string write_file(const std::string& name, const std::string& header,
                         const std::string& data, uint64_t length = UINT64_MAX) const {
    if (length == UINT64_MAX) length = header.size();
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
    return write_bytes(name, bytes + header + data);
  }

  fs::path dir_;
};

std::string floats_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// Expects load_safetensors (and inspect_safetensors, unless values_only) to throw a mokd::Error
// whose message contains the file path and every fragment.
void expect_rejected(const std::string& file, const std::vector<std::string>& fragments,
                     io::LoadOptions opts = {}, bool values_only = false) {
  for (int pass = 0; pass < (values_only ? 1 : 2); ++pass) {
    try {
      if (pass == 0)
        io::load_safetensors(file, opts);
      else
        io::inspect_safetensors(file);
      ADD_FAILURE() << (pass ? "inspect" : "load") << " accepted " << file;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(file), std::string::npos) << "message does not name the file: " << msg;
      for (const std::string& f : fragments)
        EXPECT_NE(msg.find(f), std::string::npos) << "message lacks \"" << f << "\": " << msg;
    }
  }
}

// ---- round trips and layout -------------------------------------------------------------------

TEST_F(Safetensors, RoundTripKeepsNamesShapesValuesAndMetadata) {
  io::TensorMap in;
  in["b.weight"] = test::randn({3, 5}, 1);
  in["a.bias"] = test::randn({7}, 2);
  in["scalar"] = Tensor::scalar(-2.5f);
  in["empty"] = Tensor::zeros({0, 4});
  in["steps"] = Tensor::from_vector_i64({-3, 0, (int64_t{1} << 40)}, {3});
  in["f64"] = Tensor::from_vector({1.f / 3, -7.f}, {2}).to(DType::F64);
  in["i32"] = Tensor::from_vector_i64({5, -6}, {2}).to(DType::I32);
  io::Metadata meta{{"format", "pt"}, {"note", "héllo \"quoted\""}};
  std::string p = path("rt.safetensors");
  io::save_safetensors(p, in, meta);

  io::Metadata meta_back;
  io::TensorMap out = io::load_safetensors(p, {}, &meta_back);
  EXPECT_EQ(meta_back, meta);
  ASSERT_EQ(out.size(), in.size());
  for (const auto& [name, t] : in) {
    ASSERT_TRUE(out.count(name)) << name;
    const Tensor& o = out.at(name);
    EXPECT_EQ(o.shape(), t.shape()) << name;
    if (t.dtype() == DType::I64 || t.dtype() == DType::I32) {
      EXPECT_EQ(o.dtype(), t.dtype()) << name;
      EXPECT_EQ(o.to_vector_i64(), t.to_vector_i64()) << name;
    } else {
      EXPECT_EQ(o.dtype(), DType::F32) << name;
      EXPECT_EQ(o.to_vector(), t.to_vector()) << name;
    }
  }
}

TEST_F(Safetensors, NonContiguousTensorsAreSavedByValue) {
  Tensor x = test::randn({4, 6}, 3);
  io::TensorMap in{{"t", x.permute_view({1, 0})}, {"n", x.narrow_view(1, 2, 3)}};
  std::string p = path("views.safetensors");
  io::save_safetensors(p, in);
  io::TensorMap out = io::load_safetensors(p);
  EXPECT_EQ(out.at("t").shape(), (Shape{6, 4}));
  EXPECT_EQ(out.at("t").to_vector(), x.permute_view({1, 0}).contiguous().to_vector());
  EXPECT_EQ(out.at("n").to_vector(), x.narrow_view(1, 2, 3).contiguous().to_vector());
}

TEST_F(Safetensors, Bf16RoundTripIsBitExact) {
  // Every finite bf16 pattern with a few exponents, written as bf16 and read back as bf16 and f32.
  std::vector<float> vals;
  for (uint32_t bits = 0; bits < 0x10000; bits += 37) {
    float f = bf16_to_float(bf16{static_cast<uint16_t>(bits)});
    if (std::isfinite(f)) vals.push_back(f);
  }
  Tensor b = Tensor::from_vector(vals, {static_cast<int64_t>(vals.size())}, DType::BF16);
  std::string p = path("bf16.safetensors");
  io::save_safetensors(p, {{"b", b}});
  EXPECT_EQ(io::inspect_safetensors(p).at("b").dtype, "BF16");
  io::LoadOptions as_bf16;
  as_bf16.float_dtype = DType::BF16;
  Tensor back = io::load_safetensors(p, as_bf16).at("b");
  ASSERT_EQ(back.dtype(), DType::BF16);
  EXPECT_EQ(0, std::memcmp(back.raw_data(), b.raw_data(), b.nbytes()));
  EXPECT_EQ(io::load_safetensors(p).at("b").to_vector(), vals);  // bf16 -> f32 is exact
}

TEST_F(Safetensors, HeaderIsAlignedSortedAndTilesTheBuffer) {
  io::TensorMap in{{"zeta", test::randn({3}, 1)},
                   {"alpha", test::randn({2, 2}, 2)},
                   {"mid", Tensor::from_vector_i64({1}, {1})}};
  std::string p = path("layout.safetensors");
  io::save_safetensors(p, in, {{"k", "v"}});
  std::ifstream f(p, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  ASSERT_GE(bytes.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  EXPECT_EQ(n % 8, 0u) << "header length " << n << " is not a multiple of 8";
  std::string header = bytes.substr(8, n);
  auto j = nlohmann::ordered_json::parse(header);  // trailing spaces are allowed JSON whitespace
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "alpha", "mid", "zeta"}));
  EXPECT_EQ(j["alpha"]["data_offsets"].get<std::vector<uint64_t>>(),
            (std::vector<uint64_t>{0, 16}));
  EXPECT_EQ(j["mid"]["data_offsets"].get<std::vector<uint64_t>>(), (std::vector<uint64_t>{16, 24}));
  EXPECT_EQ(j["zeta"]["data_offsets"].get<std::vector<uint64_t>>(),
            (std::vector<uint64_t>{24, 36}));
  EXPECT_EQ(j["mid"]["dtype"].get<std::string>(), "I64");
  EXPECT_EQ(bytes.size(), 8 + n + 36);
  // No temporary file is left behind.
  int files = 0;
  for (auto& e : fs::directory_iterator(dir_)) {
    ++files;
    EXPECT_EQ(e.path().string(), p);
  }
  EXPECT_EQ(files, 1);
}

TEST_F(Safetensors, SaveReplacesAnExistingFile) {
  std::string p = path("replace.safetensors");
  io::save_safetensors(p, {{"a", test::randn({100}, 1)}});
  io::save_safetensors(p, {{"b", test::randn({2}, 2)}});
  io::TensorMap out = io::load_safetensors(p);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out.at("b").to_vector(), test::randn({2}, 2).to_vector());
}

TEST_F(Safetensors, SaveRejectsReservedAndUndefined) {
  std::string p = path("bad.safetensors");
  try {
    io::save_safetensors(p, {{"__metadata__", test::randn({1}, 1)}});
    ADD_FAILURE() << "saved a tensor named __metadata__";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
  try {
    io::save_safetensors(p, {{"w", Tensor()}});
    ADD_FAILURE() << "saved an undefined tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'w'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(p));
  EXPECT_THROW(
      io::save_safetensors(path("no/such/folder/x.safetensors"), {{"a", test::randn({1}, 1)}}),
      Error);
}

// U8 arrays (images) go into the name order with the tensors; mokd's reader refuses them.
TEST_F(Safetensors, U8ArraysAreWrittenInNameOrderWithTheTensors) {
  const std::string p = path("u8.safetensors");
  io::U8Array img{{2, 1, 3}, {0, 1, 2, 253, 254, 255}};
  io::save_safetensors(p, {{"b_f32", Tensor::from_vector({1.5f, -2.f}, {2})}},
                       {{"a_u8", img}, {"c_empty", io::U8Array{{0, 4}, {}}}}, {{"k", "v"}});
  std::ifstream f(p, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(f)), {});
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  auto j = nlohmann::ordered_json::parse(bytes.substr(8, n));
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back(it.key());
  EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", "a_u8", "b_f32", "c_empty"}));
  EXPECT_EQ(j["a_u8"]["dtype"], "U8");
  EXPECT_EQ(j["a_u8"]["shape"].get<std::vector<int64_t>>(), (std::vector<int64_t>{2, 1, 3}));
  EXPECT_EQ(j["a_u8"]["data_offsets"].get<std::vector<uint64_t>>(), (std::vector<uint64_t>{0, 6}));
  EXPECT_EQ(j["b_f32"]["data_offsets"].get<std::vector<uint64_t>>(),
            (std::vector<uint64_t>{6, 14}));
  EXPECT_EQ(j["c_empty"]["data_offsets"].get<std::vector<uint64_t>>(),
            (std::vector<uint64_t>{14, 14}));
  ASSERT_EQ(bytes.size(), 8 + n + 14);
  const std::string data = bytes.substr(8 + n);
  EXPECT_EQ(data.substr(0, 6), std::string(img.data.begin(), img.data.end()));
  float v[2];
  std::memcpy(v, data.data() + 6, 8);
  EXPECT_EQ(v[0], 1.5f);
  EXPECT_EQ(v[1], -2.f);
  expect_rejected(p, {"'a_u8'", "U8", "not supported"});

  test::expect_error(
      [&] {
        io::save_safetensors(p, {}, {{"x", io::U8Array{{2, 2}, {1, 2, 3}}}});
      },
      {p, "'x'", "3 bytes", "needs 4"});
  test::expect_error(
      [&] {
        io::save_safetensors(p, {{"x", Tensor::from_vector({1.f}, {1})}},
                             {{"x", io::U8Array{{1}, {7}}}});
      },
      {p, "'x'", "both"});
  EXPECT_EQ(fs::file_size(p), bytes.size()) << "a refused write changed the file";
}

TEST_F(Safetensors, InspectReadsTheHeaderOnly) {
  std::string p = path("inspect.safetensors");
  io::save_safetensors(p,
                       {{"w", test::randn({2, 3}, 1)}, {"n", Tensor::from_vector_i64({1, 2}, {2})}},
                       {{"m", "1"}});
  io::Metadata meta;
  auto entries = io::inspect_safetensors(p, &meta);
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries.at("w").dtype, "F32");
  EXPECT_EQ(entries.at("w").shape, (Shape{2, 3}));
  EXPECT_EQ(entries.at("n").dtype, "I64");
  EXPECT_EQ(entries.at("n").begin, 0u);
  EXPECT_EQ(entries.at("n").end, 16u);
  EXPECT_EQ(meta.at("m"), "1");
}

// ---- the PyTorch-written fixture ----------------------------------------------------------------

// Bitwise equality (so -0.0, subnormals and NaN payloads count), same dtype and shape.
void expect_bits_equal(const Tensor& a, const Tensor& b, const std::string& what) {
  ASSERT_EQ(a.dtype(), b.dtype()) << what;
  ASSERT_EQ(a.shape(), b.shape()) << what;
  ASSERT_TRUE(a.is_contiguous() && b.is_contiguous()) << what;
  const uint8_t* pa = static_cast<const uint8_t*>(a.raw_data());
  const uint8_t* pb = static_cast<const uint8_t*>(b.raw_data());
  size_t es = dtype_size(a.dtype());
  for (int64_t i = 0; i < a.numel(); ++i) {
    if (std::memcmp(pa + i * es, pb + i * es, es) != 0) {
      ADD_FAILURE() << what << ": first difference at flat index " << i << " (" << a.to_vector()[i]
                    << " vs " << b.to_vector()[i] << ")";
      return;
    }
  }
}

// The expected values (they hold torch's bf16 infinities, so non-finite values are allowed).
io::TensorMap load_expected(DType float_dtype = DType::F32) {
  std::string p = test::fixture_path("safetensors_torch_expected.safetensors");
  io::LoadOptions opts;
  opts.allow_non_finite = true;
  opts.float_dtype = float_dtype;
  return io::load_safetensors(p, opts);
}

TEST_F(Safetensors, TorchWrittenFileLoadsExactly) {
  io::Metadata meta;
  io::TensorMap got =
      io::load_safetensors(test::fixture_path("safetensors_torch.safetensors"), {}, &meta);
  io::TensorMap want = load_expected();
  EXPECT_EQ(meta.at("format"), "pt");
  EXPECT_EQ(meta.at("unicode"), "\xc3\xa9\xe4\xb8\xad");
  EXPECT_EQ(got.size(), 10u);
  for (const auto& [name, t] : got) {
    ASSERT_TRUE(want.count(name)) << name;
    expect_bits_equal(t, want.at(name), name);
  }
  EXPECT_EQ(got.at("i64").dtype(), DType::I64);
  EXPECT_EQ(got.at("i32").dtype(), DType::I32);
  EXPECT_EQ(got.at("scalar").shape(), Shape{});
  EXPECT_EQ(got.at("empty").shape(), (Shape{0, 3}));
  EXPECT_GT(got.at("f16").numel(), 2000);  // the sweep really is there

  auto entries = io::inspect_safetensors(test::fixture_path("safetensors_torch.safetensors"));
  EXPECT_EQ(entries.at("f16").dtype, "F16");
  EXPECT_EQ(entries.at("bf16_matrix").dtype, "BF16");
  EXPECT_EQ(entries.at("bf16_matrix").shape, (Shape{3, 4}));
}

TEST_F(Safetensors, TorchWrittenFileConvertsToBf16LikeTorch) {
  io::LoadOptions opts;
  opts.float_dtype = DType::BF16;
  const std::string file = test::fixture_path("safetensors_torch.safetensors");
  // f32 max rounds to bf16 infinity (as in torch): an error by default, naming the tensor.
  expect_rejected(file, {"'f32'", "overflows bf16"}, opts, true);
  opts.allow_non_finite = true;
  io::TensorMap got = io::load_safetensors(file, opts);
  io::TensorMap want = load_expected(DType::BF16);
  for (const char* name : {"f32", "f64", "f16"})
    expect_bits_equal(got.at(name), want.at(std::string(name) + "_as_bf16"), name);
  EXPECT_EQ(got.at("i64").dtype(), DType::I64);  // integers keep their dtype
}

TEST_F(Safetensors, TorchWrittenNonFiniteValuesNeedPermission) {
  const std::string file = test::fixture_path("safetensors_torch_nonfinite.safetensors");
  expect_rejected(file, {"'a_f32'", "non-finite", "index 2"}, {}, true);
  io::LoadOptions opts;
  opts.allow_non_finite = true;
  io::TensorMap got = io::load_safetensors(file, opts);
  auto a = got.at("a_f32").to_vector(), b = got.at("b_f16").to_vector(),
       c = got.at("c_bf16").to_vector();
  EXPECT_TRUE(std::isnan(a[2]));
  EXPECT_EQ(a[3], 4.f);
  EXPECT_EQ(b[0], 0.5f);
  EXPECT_EQ(b[1], -INFINITY);
  EXPECT_EQ(b[2], INFINITY);
  EXPECT_TRUE(std::isnan(b[3]));
  EXPECT_TRUE(std::isnan(c[0]));
  EXPECT_EQ(c[1], 2.f);
}

// ---- crafted files: accepted ------------------------------------------------------------------

TEST_F(Safetensors, CraftedFileWithPaddingAndUnalignedDataLoads) {
  // Header of odd length (data unaligned), trailing spaces, offsets not in name order, metadata.
  std::string header =
      R"({"z":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("a":{"dtype":"I64","shape":[1,1],"data_offsets":[8,16]},"__metadata__":{"k":"v"}}   )";
  if (header.size() % 8 == 0) header += " ";
  int64_t i = -5;
  std::string data = floats_bytes({1.5f, -2.f}) + std::string(reinterpret_cast<const char*>(&i), 8);
  std::string p = write_file("ok.safetensors", header, data);
  io::Metadata meta;
  io::TensorMap m = io::load_safetensors(p, {}, &meta);
  EXPECT_EQ(m.at("z").to_vector(), (std::vector<float>{1.5f, -2.f}));
  EXPECT_EQ(m.at("a").to_vector_i64(), (std::vector<int64_t>{-5}));
  EXPECT_EQ(m.at("a").shape(), (Shape{1, 1}));
  EXPECT_EQ(meta.at("k"), "v");
}

TEST_F(Safetensors, EmptyHeaderObjectIsAnEmptyFile) {
  std::string p = write_file("empty.safetensors", "{}      ", "");
  EXPECT_TRUE(io::load_safetensors(p).empty());
}

TEST_F(Safetensors, ZeroSizedTensorsMayShareAnOffset) {
  std::string header = R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("c":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  std::string p = write_file("zero.safetensors", header, floats_bytes({1.f, 2.f}));
  io::TensorMap m = io::load_safetensors(p);
  EXPECT_EQ(m.at("a").numel(), 0);
  EXPECT_EQ(m.at("c").to_vector(), std::vector<float>{2.f});
}

TEST_F(Safetensors, EveryF16PatternConvertsExactly) {
  // All 65536 halves, checked against an independent ldexp formula.
  std::vector<uint16_t> bits(1 << 16);
  for (uint32_t b = 0; b < bits.size(); ++b) bits[b] = static_cast<uint16_t>(b);
  std::string header = R"({"h":{"dtype":"F16","shape":[65536],"data_offsets":[0,131072]}})";
  std::string p =
      write_file("f16.safetensors", header,
                 std::string(reinterpret_cast<const char*>(bits.data()), bits.size() * 2));
  io::LoadOptions opts;
  opts.allow_non_finite = true;
  std::vector<float> got = io::load_safetensors(p, opts).at("h").to_vector();
  ASSERT_EQ(got.size(), bits.size());
  int bad = 0;
  for (uint32_t b = 0; b < bits.size(); ++b) {
    int e = (b >> 10) & 31, m = b & 1023;
    double sign = (b & 0x8000) ? -1.0 : 1.0;
    double want = e == 0    ? sign * std::ldexp(m, -24)
                  : e == 31 ? (m ? NAN : sign * INFINITY)
                            : sign * std::ldexp(1024 + m, e - 25);
    bool ok = std::isnan(want) ? std::isnan(got[b])
                               : (got[b] == want && std::signbit(got[b]) == std::signbit(want));
    if (!ok && bad++ < 5)
      ADD_FAILURE() << "f16 0x" << std::hex << b << ": got " << got[b] << " want " << want;
  }
  EXPECT_EQ(bad, 0);
  // Default options reject the first non-finite one: 0x7c00 (+inf).
  expect_rejected(p, {"'h'", "index 31744"}, {}, true);
}

TEST_F(Safetensors, FloatDtypeOptionF64AndInvalid) {
  std::string p = path("x.safetensors");
  io::save_safetensors(p, {{"x", Tensor::from_vector({0.1f, -3.f}, {2})}});
  io::LoadOptions opts;
  opts.float_dtype = DType::F64;
  Tensor x = io::load_safetensors(p, opts).at("x");
  EXPECT_EQ(x.dtype(), DType::F64);
  EXPECT_EQ(x.to_vector(), (std::vector<float>{0.1f, -3.f}));
  opts.float_dtype = DType::I32;
  expect_rejected(p, {"float_dtype"}, opts, true);
}

TEST_F(Safetensors, F64OutsideF32RangeIsAnOverflowError) {
  double v[2] = {1.0, 1e39};
  std::string header = R"({"big":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}})";
  std::string p =
      write_file("big.safetensors", header, std::string(reinterpret_cast<const char*>(v), 16));
  expect_rejected(p, {"'big'", "index 1", "overflows f32"}, {}, true);
  io::LoadOptions f64;
  f64.float_dtype = DType::F64;
  EXPECT_EQ(io::load_safetensors(p, f64).at("big").to_vector()[0], 1.f);
}

// ---- crafted files: rejected ------------------------------------------------------------------

const std::string kGood = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";

TEST_F(Safetensors, RejectsMissingOrDirectory) {
  expect_rejected(path("missing.safetensors"), {"cannot open"});
  fs::create_directories(path("folder"));
  expect_rejected(path("folder"), {"not a regular file"});
}

TEST_F(Safetensors, RejectsFilesShorterThanEightBytes) {
  expect_rejected(write_bytes("empty.safetensors", ""), {"0 bytes", "shorter than"});
  expect_rejected(write_bytes("five.safetensors", std::string("\x02\0\0\0\0", 5)),
                  {"5 bytes", "shorter than"});
}

TEST_F(Safetensors, RejectsHugeHeaderLength) {
  expect_rejected(write_file("huge.safetensors", kGood, floats_bytes({1, 2}), 100'000'001),
                  {"100000001", "limit"});
  expect_rejected(write_file("max.safetensors", kGood, floats_bytes({1, 2}), UINT64_MAX - 1),
                  {"limit"});
}

TEST_F(Safetensors, RejectsHeaderLengthPastTheEnd) {
  expect_rejected(write_file("past.safetensors", kGood, "", kGood.size() + 1), {"past the end"});
}

TEST_F(Safetensors, RejectsInvalidJson) {
  expect_rejected(write_file("j1.safetensors", R"({"w":{"dtype":"F32",)", ""), {"not valid JSON"});
  expect_rejected(write_file("j2.safetensors", kGood + "x", floats_bytes({1, 2})),
                  {"not valid JSON"});
  expect_rejected(write_file("j3.safetensors", std::string("{\"\xff\":1}"), ""),
                  {"not valid JSON"});
  expect_rejected(write_file("j4.safetensors", std::string("{}\0\0", 4), ""), {"not valid JSON"});
  expect_rejected(write_file("j5.safetensors", "", ""), {"not valid JSON"});
}

TEST_F(Safetensors, RejectsNonObjectHeader) {
  expect_rejected(write_file("arr.safetensors", "[1,2]", ""), {"must be a JSON object", "array"});
  expect_rejected(write_file("num.safetensors", "42", ""), {"must be a JSON object"});
}

TEST_F(Safetensors, RejectsDeepNesting) {
  std::string deep = R"({"w":)" + std::string(200, '[') + std::string(200, ']') + "}";
  expect_rejected(write_file("deep.safetensors", deep, ""), {"nests deeper"});
}

TEST_F(Safetensors, RejectsMissingEntryFields) {
  expect_rejected(write_file("m1.safetensors", R"({"w":{"shape":[2],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "no \"dtype\""});
  expect_rejected(write_file("m2.safetensors", R"({"w":{"dtype":"F32","data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "no \"shape\""});
  expect_rejected(
      write_file("m3.safetensors", R"({"w":{"dtype":"F32","shape":[2]}})", floats_bytes({1, 2})),
      {"'w'", "no \"data_offsets\""});
}

TEST_F(Safetensors, RejectsWrongJsonTypes) {
  auto entry = [&](const std::string& name, const std::string& body) {
    return write_file(name, R"({"w":)" + body + "}", floats_bytes({1, 2}));
  };
  expect_rejected(entry("t1", "[1]"), {"'w'", "must be a JSON object"});
  expect_rejected(entry("t2", R"({"dtype":4,"shape":[2],"data_offsets":[0,8]})"),
                  {"'w'", "\"dtype\" must be a string"});
  expect_rejected(entry("t3", R"({"dtype":"F32","shape":"2","data_offsets":[0,8]})"),
                  {"'w'", "\"shape\" must be an array"});
  expect_rejected(entry("t4", R"({"dtype":"F32","shape":["2"],"data_offsets":[0,8]})"),
                  {"'w'", "shape[0]", "string"});
  expect_rejected(entry("t5", R"({"dtype":"F32","shape":[2],"data_offsets":{"0":8}})"),
                  {"'w'", "data_offsets"});
  expect_rejected(entry("t6", R"({"dtype":"F32","shape":[2],"data_offsets":[0,4,8]})"),
                  {"'w'", "data_offsets"});
  expect_rejected(entry("t7", R"({"dtype":"F32","shape":[2],"data_offsets":[0,"8"]})"),
                  {"'w'", "data_offsets[1]"});
  expect_rejected(entry("t8", R"({"dtype":"F32","shape":[2],"data_offsets":[0,8.0]})"),
                  {"'w'", "data_offsets[1]", "non-integer"});
  expect_rejected(entry("t9", R"({"dtype":"F32","shape":[2],"data_offsets":[-0,8]})"), {"'w'"});
  expect_rejected(write_file("meta1", R"({"__metadata__":[1]})", ""),
                  {"__metadata__", "must be an object"});
  expect_rejected(write_file("meta2", R"({"__metadata__":{"epoch":3}})", ""),
                  {"__metadata__", "\"epoch\"", "must be a string"});
}

TEST_F(Safetensors, RejectsUnknownAndUnsupportedDtypes) {
  expect_rejected(write_file("d1", R"({"w":{"dtype":"F17","shape":[2],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "unknown dtype", "F17"});
  expect_rejected(write_file("d2", R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "U8", "not supported"});
  expect_rejected(write_file("d3", R"({"w":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "unknown dtype"});
}

TEST_F(Safetensors, RejectsNegativeOrFractionalShapes) {
  expect_rejected(write_file("s1", R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "shape[0]", "negative"});
  expect_rejected(write_file("s2", R"({"w":{"dtype":"F32","shape":[2.5],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "shape[0]", "non-integer"});
  expect_rejected(write_file("s3", R"({"w":{"dtype":"F32","shape":[1,2.0],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "shape[1]", "non-integer"});
  expect_rejected(write_file("s4", R"({"w":{"dtype":"F32","shape":[1e30],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "shape[0]"});
}

TEST_F(Safetensors, RejectsShapeOverflow) {
  // 2^62 * 2^62 overflows 64 bits; 2^61 elements of F64 overflow the byte count; 2^63 exceeds
  // int64.
  expect_rejected(
      write_file(
          "o1",
          R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}})",
          ""),
      {"'w'", "64 bits"});
  expect_rejected(
      write_file("o2",
                 R"({"w":{"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,8]}})", ""),
      {"'w'", "overflows"});
  expect_rejected(
      write_file("o3",
                 R"({"w":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8]}})", ""),
      {"'w'", "too large"});
  expect_rejected(
      write_file(
          "o4",
          R"({"w":{"dtype":"F32","shape":[0, 4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})",
          ""),
      {"'w'", "64 bits"});
}

TEST_F(Safetensors, RejectsSizeMismatch) {
  expect_rejected(write_file("z1", R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "span 8 bytes", "needs 12"});
  expect_rejected(write_file("z2", R"({"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,8]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "needs 4"});
}

TEST_F(Safetensors, RejectsBeginAfterEnd) {
  expect_rejected(write_file("be", R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "begin > end"});
}

TEST_F(Safetensors, RejectsOffsetsPastTheBuffer) {
  expect_rejected(write_file("p1", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             floats_bytes({1, 2})),
                  {"'w'", "past the end", "8-byte data buffer"});
  expect_rejected(write_file("p2", kGood, floats_bytes({1})), {"'w'", "past the end"});
}

TEST_F(Safetensors, RejectsOverlappingRanges) {
  std::string header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})";
  expect_rejected(write_file("ov", header, floats_bytes({1, 2, 3})), {"'a'", "'b'", "overlap"});
  std::string same = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("b":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}})";
  expect_rejected(write_file("ov2", same, floats_bytes({1, 2})), {"'a'", "'b'", "overlap"});
}

TEST_F(Safetensors, RejectsGapsAndUncoveredBytes) {
  std::string gap = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  expect_rejected(write_file("g1", gap, floats_bytes({1, 2, 3})), {"4-byte gap", "'a'", "'b'"});
  std::string start = R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})";
  expect_rejected(write_file("g2", start, floats_bytes({1, 2})), {"gap at the start", "'b'"});
  expect_rejected(write_file("g3", kGood, floats_bytes({1, 2, 3})),
                  {"4 bytes after the last tensor", "'w'"});
  expect_rejected(write_file("g4", "{}", floats_bytes({1})), {"4 bytes after the last tensor"});
}

TEST_F(Safetensors, RejectsDuplicateNames) {
  std::string dup = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})";
  expect_rejected(write_file("dup", dup, floats_bytes({1, 2, 3, 4})),
                  {"duplicate tensor name 'w'"});
  std::string dupkey = R"({"w":{"dtype":"F32","dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  expect_rejected(write_file("dupkey", dupkey, floats_bytes({1, 2})), {"duplicate key \"dtype\""});
  std::string dupmeta = R"({"__metadata__":{"a":"1","a":"2"}})";
  expect_rejected(write_file("dupmeta", dupmeta, ""), {"duplicate key \"a\""});
  std::string dupm2 = R"({"__metadata__":{},"__metadata__":{}})";
  expect_rejected(write_file("dupm2", dupm2, ""), {"duplicate", "__metadata__"});
}

TEST_F(Safetensors, RejectsNonFiniteFloatsNamingTensorAndIndex) {
  std::string header = R"({"ok":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("w":{"dtype":"F32","shape":[2,2],"data_offsets":[8,24]}})";
  std::string p = write_file("nf", header, floats_bytes({1, 2, 3, 4, INFINITY, NAN}));
  // The message says what a file must hold, not the library option that lifts the check.
  expect_rejected(p, {"'w'", "non-finite", "index 2", "must hold finite values"}, {}, true);
  io::LoadOptions opts;
  opts.allow_non_finite = true;
  auto w = io::load_safetensors(p, opts).at("w").to_vector();
  EXPECT_EQ(w[2], INFINITY);
  EXPECT_TRUE(std::isnan(w[3]));
  uint16_t bf[3] = {0x3f80, 0x3f80, 0xff80};  // 1, 1, -inf
  std::string pb = write_file("nfb",
                              R"({"b":{"dtype":"BF16","shape":[3],"data_offsets":[0,6]}})"
                              "    ",
                              std::string(reinterpret_cast<const char*>(bf), 6));
  expect_rejected(pb, {"'b'", "non-finite", "index 2"}, {}, true);
  // Integers are never checked.
  int32_t iv = -1;
  std::string pi = write_file("int", R"({"i":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})",
                              std::string(reinterpret_cast<const char*>(&iv), 4));
  EXPECT_EQ(io::load_safetensors(pi).at("i").to_vector_i64(), std::vector<int64_t>{-1});
}

}  // namespace
}  // namespace mokd
