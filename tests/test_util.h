// Shared test helpers: random inputs, closeness checks, finite-difference gradient checks and
// reference fixtures (written by tools/make_reference.py into tests/data/).
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "io/safetensors.h"

namespace mokd::test {

// Random f32 tensors on the CPU, reproducible from the seed.
Tensor randn(const Shape& shape, uint64_t seed, float std = 1.f);
Tensor uniform(const Shape& shape, uint64_t seed, float lo, float hi);

// Max |a - b| / max(max |b|, tiny): the "relative error" the tests and docs quote.
double rel_error(const Tensor& actual, const Tensor& expected);

// Element-wise |a - b| <= atol + rtol |b|, same shape, no NaN/Inf in a; reports the worst element.
void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol,
                  const std::string& what);

struct GradCheckOptions {
  double eps = 1e-3;  // central-difference step
  double rtol = 1e-2;
  double atol = 1e-3;
  uint64_t seed = 1234;  // of the random projection r
};

// Checks the gradients of L = sum(f(inputs) * r), r a fixed random tensor, with respect to every
// input that requires grad, against central finite differences (L evaluated in double).
// f must be a pure function of its inputs (deterministic).
void gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
               const std::vector<Tensor>& inputs, const GradCheckOptions& opt = {},
               const std::string& what = "");

// Reference fixtures (tests/data/). Naming rule: fixture X.safetensors or X_<suffix>.safetensors
// (likewise X_<suffix>.txt) is written by tools/reference/X.py, X being the longest prefix of the
// name, cut at an underscore, that names a script there; `python3 tools/make_reference.py X`
// rewrites it. Its metadata (tools/reference/_common.py) records script, command, requires, the
// package versions and params: the hyper-parameters as one JSON object, which tests read here
// instead of repeating them.

// The script writing `file` by the rule ("tools/reference/X.py"); "" when no script matches.
std::string fixture_script(const std::string& file);

// Path of tests/data/<file> (MOKD_TEST_DATA in the environment overrides the build's folder).
// Throws when the file is missing, naming the script, the command and the packages that write it.
std::string fixture_path(const std::string& file);

// One safetensors fixture: tensors, metadata and typed access to its params by dotted path
// ("adamw.lr", "teacher.embed_dim"). A missing tensor or parameter, or one of another type, is an
// error naming the fixture, the key and the script to rerun.
class Fixture {
 public:
  explicit Fixture(const std::string& file, const io::LoadOptions& opts = {});

  const std::string& file() const { return file_; }
  const io::TensorMap& tensors() const { return tensors_; }
  const io::Metadata& metadata() const { return metadata_; }
  const Tensor& at(const std::string& name) const;
  const Tensor& operator[](const std::string& name) const { return at(name); }
  size_t count(const std::string& name) const { return tensors_.count(name); }

  const nlohmann::json& param(const std::string& path) const;
  float param_f(const std::string& path) const;   // a number, as f32
  double param_d(const std::string& path) const;  // a number
  int64_t param_i(const std::string& path) const;
  bool param_b(const std::string& path) const;
  std::string param_s(const std::string& path) const;
  std::vector<float> param_fv(const std::string& path) const;  // an array of numbers
  std::vector<int64_t> param_iv(const std::string& path) const;

 private:
  [[noreturn]] void fail(const std::string& what) const;
  std::string file_;
  io::TensorMap tensors_;
  io::Metadata metadata_;
  nlohmann::json params_;
};

// Tensors of tests/data/<file> (Fixture(file).tensors()).
io::TensorMap load_fixture(const std::string& file);

// The first n bytes of a fixture tensor holding uint8 data packed four per little-endian I32 word
// (tools/reference/_common.py's pack_u8; mokd's tensors have no uint8 type).
std::vector<uint8_t> unpack_u8(const Tensor& t, size_t n);

// A fresh temporary folder per test (named after the test and the process), world-readable so
// that an unprivileged child process can use it; removed at the end of the scope, read-only
// subfolders included.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path(const std::string& name) const;
  std::string root() const { return dir_; }

 private:
  void remove() const;
  std::string dir_;
};

// t with requires_grad set, for inline use: gradcheck(f, {requires_grad(randn(...))}).
Tensor requires_grad(Tensor t);

// The message of the mokd::Error that f throws; "" when f returns normally.
std::string error_of(const std::function<void()>& f);

// Runs f and expects a mokd::Error whose message contains every part.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts);

}  // namespace mokd::test
