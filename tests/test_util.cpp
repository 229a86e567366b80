#include "tests/test_util.h"

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace mokd::test {

Tensor randn(const Shape& shape, uint64_t seed, float std) {
  Tensor t = Tensor::empty(shape);
  Generator g(seed, Stream::Init);
  normal_(t, 0.f, std, g);
  return t;
}

Tensor uniform(const Shape& shape, uint64_t seed, float lo, float hi) {
  Tensor t = Tensor::empty(shape);
  Generator g(seed, Stream::Init);
  uniform_(t, lo, hi, g);
  return t;
}

double rel_error(const Tensor& actual, const Tensor& expected) {
  EXPECT_EQ(shape_str(actual.shape()), shape_str(expected.shape()));
  if (actual.shape() != expected.shape()) return INFINITY;
  auto a = actual.to_vector(), b = expected.to_vector();
  double num = 0, den = 1e-30;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num = std::max(num, std::fabs(static_cast<double>(a[i]) - b[i]));
    den = std::max(den, std::fabs(static_cast<double>(b[i])));
  }
  return num / den;
}

void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol,
                  const std::string& what) {
  ASSERT_TRUE(actual.defined()) << what << ": actual is undefined";
  ASSERT_TRUE(expected.defined()) << what << ": expected is undefined";
  ASSERT_EQ(shape_str(actual.shape()), shape_str(expected.shape())) << what;
  auto a = actual.to_vector(), b = expected.to_vector();
  size_t worst = 0, bad = 0;
  double worst_excess = -1;
  for (size_t i = 0; i < a.size(); ++i) {
    double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
    double tol = atol + rtol * std::fabs(static_cast<double>(b[i]));
    bool ok = std::isfinite(a[i]) && diff <= tol;
    if (!ok) ++bad;
    double excess = std::isfinite(a[i]) ? diff - tol : INFINITY;
    if (excess > worst_excess) {
      worst_excess = excess;
      worst = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << a.size()
                     << " elements differ; worst at flat index " << worst << ": actual " << a[worst]
                     << " expected " << b[worst] << " (rtol " << rtol << ", atol " << atol << ")";
}

static double projected_loss(const Tensor& y, const std::vector<float>& r) {
  auto v = y.to_vector();
  double s = 0;
  for (size_t i = 0; i < v.size(); ++i) s += static_cast<double>(v[i]) * r[i];
  return s;
}

void gradcheck(const std::function<Tensor(const std::vector<Tensor>&)>& f,
               const std::vector<Tensor>& inputs, const GradCheckOptions& opt,
               const std::string& what) {
  std::vector<Tensor> xs;
  for (const Tensor& t : inputs) {
    Tensor c = t.clone();
    if (t.requires_grad()) c.set_requires_grad(true);
    xs.push_back(c);
  }
  Tensor y = f(xs);
  ASSERT_TRUE(y.requires_grad()) << what << ": output does not require grad";
  Tensor r = randn(y.shape(), opt.seed);
  std::vector<float> rv = r.to_vector();
  Tensor loss = sum(mul(y, r));
  loss.backward();

  NoGrad ng;
  for (size_t i = 0; i < xs.size(); ++i) {
    if (!inputs[i].requires_grad()) continue;
    Tensor g = xs[i].grad();
    ASSERT_TRUE(g.defined()) << what << ": no gradient reached input " << i;
    std::vector<float> analytic = g.to_vector();
    float* p = xs[i].data<float>();
    size_t bad = 0;
    std::string first;
    for (int64_t j = 0; j < xs[i].numel(); ++j) {
      float orig = p[j];
      p[j] = static_cast<float>(orig + opt.eps);
      double lp = projected_loss(f(xs), rv);
      p[j] = static_cast<float>(orig - opt.eps);
      double lm = projected_loss(f(xs), rv);
      p[j] = orig;
      double numeric = (lp - lm) / (2 * opt.eps);
      double diff = std::fabs(numeric - analytic[j]);
      if (!(diff <= opt.atol + opt.rtol * std::fabs(numeric))) {
        if (bad++ == 0)
          first = "element " + std::to_string(j) + ": analytic " + std::to_string(analytic[j]) +
                  " numeric " + std::to_string(numeric);
      }
    }
    EXPECT_EQ(bad, 0u) << what << ": input " << i << " " << xs[i].str() << ": " << bad
                       << " gradient elements differ from finite differences; first " << first;
  }
}

namespace {

namespace fs = std::filesystem;

// MOKD_TEST_DATA in the environment overrides the build's path: binaries built on one machine
// run from another checkout (tools/gpu_check.sh carries prebuilt tests to the GPU machine).
fs::path data_dir() {
  const char* dir = std::getenv("MOKD_TEST_DATA");
  return fs::path(dir && *dir ? dir : MOKD_TEST_DATA);
}

// tools/reference/ of the checkout holding the data folder (<root>/tests/data).
fs::path scripts_dir() {
  fs::path d = data_dir().lexically_normal();
  if (!d.has_filename()) d = d.parent_path();  // a trailing slash
  return d.parent_path().parent_path() / "tools" / "reference";
}

std::string script_stem(const std::string& file) {
  const std::string stem = file.substr(0, file.find('.'));
  std::string best;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(scripts_dir(), ec)) {
    const fs::path p = e.path();
    const std::string s = p.stem().string();
    if (p.extension() != ".py" || s.empty() || s[0] == '_') continue;
    const bool match = stem == s || (stem.size() > s.size() && stem.compare(0, s.size(), s) == 0 &&
                                     stem[s.size()] == '_');
    if (match && s.size() > best.size()) best = s;
  }
  return best;
}

// The packages of the script's `REQUIRES = ("torch", ...)` line, joined by ", "; "" if absent.
std::string script_requires(const fs::path& script) {
  std::ifstream in(script);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("REQUIRES = ", 0) != 0) continue;
    std::string out;
    for (size_t q = line.find('"'); q != std::string::npos; q = line.find('"', q)) {
      const size_t end = line.find('"', q + 1);
      if (end == std::string::npos) break;
      out += (out.empty() ? "" : ", ") + line.substr(q + 1, end - q - 1);
      q = end + 1;
    }
    return out;
  }
  return "";
}

}  // namespace

std::string fixture_script(const std::string& file) {
  const std::string s = script_stem(file);
  return s.empty() ? "" : "tools/reference/" + s + ".py";
}

std::string fixture_path(const std::string& file) {
  const fs::path path = data_dir() / file;
  if (fs::exists(path)) return path.string();
  const std::string stem = script_stem(file);
  if (stem.empty())
    throw Error(path.string() + " not found, and no script in " + scripts_dir().string() +
                " matches its name (fixture X.safetensors or X_<suffix>.safetensors is written by "
                "tools/reference/X.py)");
  const std::string req = script_requires(scripts_dir() / (stem + ".py"));
  throw Error(path.string() + " not found: it is written by tools/reference/" + stem +
              ".py (python3 tools/make_reference.py " + stem +
              (req.empty() ? "" : "; needs " + req) + ")");
}

Fixture::Fixture(const std::string& file, const io::LoadOptions& opts) : file_(file) {
  tensors_ = io::load_safetensors(fixture_path(file), opts, &metadata_);
  auto it = metadata_.find("params");
  if (it == metadata_.end()) return;  // param() names the missing key
  try {
    params_ = nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("params is not valid JSON (") + e.what() + ")");
  }
}

void Fixture::fail(const std::string& what) const {
  auto meta = [&](const char* key, const std::string& fallback) {
    auto it = metadata_.find(key);
    return it != metadata_.end() ? it->second : fallback;
  };
  const std::string stem = script_stem(file_);
  const std::string script = meta("script", stem.empty() ? "?" : "tools/reference/" + stem + ".py");
  const std::string command = meta("command", "python3 tools/make_reference.py " + stem);
  throw Error("fixture tests/data/" + file_ + ": " + what + " (written by " + script + "; rerun " +
              command + ")");
}

const Tensor& Fixture::at(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("no tensor '" + name + "'");
  return it->second;
}

const nlohmann::json& Fixture::param(const std::string& path) const {
  if (!metadata_.count("params")) fail("no params in its metadata (looking for '" + path + "')");
  const nlohmann::json* j = &params_;
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string key =
        path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    if (!j->is_object() || !j->contains(key)) fail("no parameter '" + path + "' in its params");
    j = &(*j)[key];
    if (dot == std::string::npos) return *j;
    start = dot + 1;
  }
}

double Fixture::param_d(const std::string& path) const {
  const nlohmann::json& j = param(path);
  if (!j.is_number()) fail("parameter '" + path + "' is " + j.dump() + ", not a number");
  return j.get<double>();
}

float Fixture::param_f(const std::string& path) const { return static_cast<float>(param_d(path)); }

int64_t Fixture::param_i(const std::string& path) const {
  const nlohmann::json& j = param(path);
  if (!j.is_number_integer()) fail("parameter '" + path + "' is " + j.dump() + ", not an integer");
  return j.get<int64_t>();
}

bool Fixture::param_b(const std::string& path) const {
  const nlohmann::json& j = param(path);
  if (!j.is_boolean()) fail("parameter '" + path + "' is " + j.dump() + ", not a boolean");
  return j.get<bool>();
}

std::string Fixture::param_s(const std::string& path) const {
  const nlohmann::json& j = param(path);
  if (!j.is_string()) fail("parameter '" + path + "' is " + j.dump() + ", not a string");
  return j.get<std::string>();
}

std::vector<float> Fixture::param_fv(const std::string& path) const {
  const nlohmann::json& j = param(path);
  std::vector<float> out;
  if (!j.is_array()) fail("parameter '" + path + "' is " + j.dump() + ", not an array");
  for (const auto& v : j) {
    if (!v.is_number())
      fail("parameter '" + path + "' is " + j.dump() + ", not an array of numbers");
    out.push_back(static_cast<float>(v.get<double>()));
  }
  return out;
}

std::vector<int64_t> Fixture::param_iv(const std::string& path) const {
  const nlohmann::json& j = param(path);
  std::vector<int64_t> out;
  if (!j.is_array()) fail("parameter '" + path + "' is " + j.dump() + ", not an array");
  for (const auto& v : j) {
    if (!v.is_number_integer())
      fail("parameter '" + path + "' is " + j.dump() + ", not an array of integers");
    out.push_back(v.get<int64_t>());
  }
  return out;
}

io::TensorMap load_fixture(const std::string& file) { return Fixture(file).tensors(); }

std::vector<uint8_t> unpack_u8(const Tensor& t, size_t n) {
  EXPECT_EQ(t.dtype(), DType::I32);
  EXPECT_GE(t.nbytes(), n);
  std::vector<uint8_t> out(n);
  std::memcpy(out.data(), t.raw_data(), std::min(n, t.nbytes()));
  return out;
}

TempDir::TempDir() {
  namespace fs = std::filesystem;
  dir_ = (fs::temp_directory_path() /
          ("mokd_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
           "_" + std::to_string(::getpid())))
             .string();
  remove();
  fs::create_directories(dir_);
  fs::permissions(dir_, fs::perms(0755));
}

TempDir::~TempDir() { remove(); }

std::string TempDir::path(const std::string& name) const {
  return (std::filesystem::path(dir_) / name).string();
}

void TempDir::remove() const {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(dir_, ec))  // read-only folders left by a test must be writable to go
    for (const auto& e : fs::recursive_directory_iterator(dir_, ec))
      if (e.is_directory(ec)) fs::permissions(e.path(), fs::perms(0755), ec);
  fs::remove_all(dir_, ec);
}

Tensor requires_grad(Tensor t) {
  t.set_requires_grad(true);
  return t;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected a mokd::Error mentioning '" << (parts.empty() ? "" : parts[0])
                  << "'";
  } catch (const Error& e) {
    std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message lacks '" << p << "': " << msg;
  }
}

}  // namespace mokd::test
