// Shared test helpers: random inputs, closeness checks, finite-difference gradient checks and
// reference fixtures (written by tools/make_reference.py into tests/data/).
#pragma once
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "engine/ops.h"
#include "io/safetensors.h"

namespace mokd::test {

// Random f32 tensors on the CPU, reproducible from the seed.
Tensor randn(const Shape& shape, uint64_t seed, float std = 1.f);
Tensor uniform(const Shape& shape, uint64_t seed, float lo, float hi);

// Max |a - b| / max(max |b|, tiny): the "relative error" the issues quote.
double rel_error(const Tensor& actual, const Tensor& expected);

// Element-wise |a - b| <= atol + rtol |b|, same shape, no NaN/Inf in a; reports the worst element.
void expect_close(const Tensor& actual, const Tensor& expected, double rtol, double atol,
                  const std::string& what);

struct GradCheckOptions {
  double eps = 1e-3;   // central-difference step
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

// Tensors of tests/data/<file>; a missing file fails naming the script that writes it.
io::TensorMap load_fixture(const std::string& file);

// t with requires_grad set, for inline use: gradcheck(f, {requires_grad(randn(...))}).
Tensor requires_grad(Tensor t);

// The message of the mokd::Error that f throws; "" when f returns normally.
std::string error_of(const std::function<void()>& f);

// Runs f and expects a mokd::Error whose message contains every part.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts);

}  // namespace mokd::test
