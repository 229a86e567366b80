#include "tests/test_util.h"

#include <cmath>
#include <cstdlib>
#include <filesystem>

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
                     << " elements differ; worst at flat index " << worst << ": actual "
                     << a[worst] << " expected " << b[worst] << " (rtol " << rtol << ", atol "
                     << atol << ")";
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

io::TensorMap load_fixture(const std::string& file) {
  // MOKD_TEST_DATA in the environment overrides the build's path: binaries built on one machine
  // run from another checkout (tools/gpu_check.sh carries prebuilt tests to the GPU machine).
  const char* dir = std::getenv("MOKD_TEST_DATA");
  std::string path = std::string(dir && *dir ? dir : MOKD_TEST_DATA) + "/" + file;
  if (!std::filesystem::exists(path))
    throw Error("missing fixture " + path + ": regenerate with `python3 tools/make_reference.py`");
  return io::load_safetensors(path);
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
