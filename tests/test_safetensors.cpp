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
  std::string write_file(const std::string& name, const std::string& header, const std::string& data,
                         uint64_t length = UINT64_MAX) const {
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
  io::TensorMap in{{"zeta", test::randn({3}, 1)}, {"alpha", test::randn({2, 2}, 2)},
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
  EXPECT_EQ(j["alpha"]["data_offsets"], nlohmann::json::array({0, 16}));
  EXPECT_EQ(j["mid"]["data_offsets"], nlohmann::json::array({16, 24}));
  EXPECT_EQ(j["zeta"]["data_offsets"], nlohmann::json::array({24, 36}));
  EXPECT_EQ(j["mid"]["dtype"], "I64");
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
  EXPECT_THROW(io::save_safetensors(path("no/such/folder/x.safetensors"), {{"a", test::randn({1}, 1)}}),
               Error);
}

TEST_F(Safetensors, InspectReadsTheHeaderOnly) {
  std::string p = path("inspect.safetensors");
  io::save_safetensors(p, {{"w", test::randn({2, 3}, 1)}, {"n", Tensor::from_vector_i64({1, 2}, {2})}},
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

}  // namespace
}  // namespace mokd
