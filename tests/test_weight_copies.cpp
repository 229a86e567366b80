// bf16 weight copies (engine/weight_copies.h): in the bf16 mode the optimizer rewrites each matrix
// parameter's bf16 copy in its update, products read the copy instead of rounding the weight, and
// a copy is never used once the values change another way (copy_, fill_, an f32-mode step).
#include <gtest/gtest.h>

#include "engine/precision.h"
#include "engine/weight_copies.h"
#include "mokd/optim.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

struct Bf16Mode {
  Bf16Mode() { set_matmul_precision(MatmulPrecision::BF16); }
  ~Bf16Mode() { set_matmul_precision(MatmulPrecision::F32); }
};

// The copy equals the parameter's values rounded to bf16, bit for bit.
void expect_current(const Tensor& p, const std::string& what) {
  Tensor copy = bf16_copy_of(p);
  ASSERT_TRUE(copy.defined()) << what << ": no bf16 copy";
  EXPECT_EQ(copy.dtype(), DType::BF16) << what;
  EXPECT_EQ(copy.to_vector(), p.to(DType::BF16).to_vector()) << what;
}

// One AdamW or SGD step of w (and a bias) on the gradient of sum(linear(x, w, b) * r).
void train_step(Optimizer& opt, const Tensor& w, const Tensor& b, uint64_t seed) {
  Tensor x = test::randn({6, 5}, seed);
  Tensor r = test::randn({6, 4}, seed + 1);
  opt.zero_grad();
  sum(cast(mul(linear(x, w, b), r), DType::F32)).backward();
  opt.step();
}

TEST(WeightCopies, TheUpdateRewritesTheCopyOfEveryMatrixParameter) {
  for (const char* kind : {"adamw", "sgd"}) {
    Tensor w = test::requires_grad(test::randn({4, 5}, 1));
    Tensor b = test::requires_grad(test::randn({4}, 2));
    std::vector<ParamGroup> groups{{{w, b}, 0.05f, 0.01f}};
    std::unique_ptr<Optimizer> opt;
    if (std::string(kind) == "adamw")
      opt = std::make_unique<AdamW>(groups, AdamOptions{});
    else
      opt = std::make_unique<SGD>(groups, SgdOptions{0.9f, 0.f, false});
    Bf16Mode mode;
    for (uint64_t step = 0; step < 3; ++step) {
      train_step(*opt, w, b, 10 + step);
      expect_current(w, std::string(kind) + " after step " + std::to_string(step + 1));
    }
    expect_current(b, std::string(kind) + " bias");  // a linear reads its bias in bf16 too
  }
}

TEST(WeightCopies, ProductsReadTheCopy) {
  Tensor w = test::randn({3, 8}, 3);
  Tensor x = test::randn({2, 8}, 4);
  Bf16Mode mode;
  Tensor before = linear(x, w, Tensor()).to(DType::F32);
  // A copy holding other values than w's: the product must follow the copy, not w.
  Tensor copy = make_bf16_copy(w);
  Tensor doubled = scale(w, 2.f).to(DType::BF16);
  backend_for(copy).copy(doubled, copy);  // a raw write: w's storage keeps its copy
  ASSERT_TRUE(bf16_copy_of(w).defined());
  Tensor after = linear(x, w, Tensor()).to(DType::F32);
  test::expect_close(after, scale(before, 2.f), 1e-2, 1e-2, "linear through the copy");
  Tensor conv_w = test::randn({2, 1, 1, 8}, 5);
  Tensor img = test::randn({1, 2, 2, 8}, 6);
  Tensor c0 = conv2d(img, conv_w, Tensor(), Conv2dParams{}).to(DType::F32);
  Tensor cc = make_bf16_copy(conv_w);
  backend_for(cc).copy(scale(conv_w, -1.f).to(DType::BF16), cc);
  test::expect_close(conv2d(img, conv_w, Tensor(), Conv2dParams{}).to(DType::F32), scale(c0, -1.f),
                     1e-6, 1e-6, "conv2d through the copy");
}

TEST(WeightCopies, AnyOtherWriteDropsTheCopy) {
  Tensor w = test::randn({4, 5}, 7);
  make_bf16_copy(w);
  ASSERT_TRUE(bf16_copy_of(w).defined());
  w.copy_(test::randn({4, 5}, 8));  // loading a checkpoint, an EMA swap
  EXPECT_FALSE(bf16_copy_of(w).defined()) << "copy_";
  make_bf16_copy(w);
  w.narrow_view(0, 1, 2).fill_(0.0);  // a write through a view of the same storage
  EXPECT_FALSE(bf16_copy_of(w).defined()) << "fill_ of a view";
  make_bf16_copy(w);
  Generator gen(1, Stream::Init);
  normal_(w, 0.f, 1.f, gen);  // initialisation
  EXPECT_FALSE(bf16_copy_of(w).defined()) << "normal_";
  // A view is not a whole parameter: it neither has nor makes a copy.
  EXPECT_FALSE(can_keep_bf16_copy(w.narrow_view(0, 0, 2)));
  EXPECT_THROW(make_bf16_copy(w.narrow_view(0, 0, 2)), Error);
}

TEST(WeightCopies, AnF32StepDropsTheCopyItWouldNotKeepCurrent) {
  Tensor w = test::requires_grad(test::randn({4, 5}, 9));
  Tensor b = test::requires_grad(test::randn({4}, 10));
  AdamW opt({{{w, b}, 0.05f, 0.f}}, AdamOptions{});
  {
    Bf16Mode mode;
    train_step(opt, w, b, 20);
  }
  ASSERT_TRUE(bf16_copy_of(w).defined());
  train_step(opt, w, b, 30);  // f32 mode
  EXPECT_FALSE(bf16_copy_of(w).defined());
  Bf16Mode mode;
  train_step(opt, w, b, 40);
  expect_current(w, "back in the bf16 mode");
}

// The CUDA multi-tensor updates write the copy in the same pass, equal to the CPU's.
TEST(CudaWeightCopies, TheUpdateWritesTheSameCopyAsTheCpu) {
  SKIP_WITHOUT_CUDA();
  const Device gpu = Device::cuda();
  for (const char* kind : {"adamw", "sgd"}) {
    Tensor w = test::requires_grad(test::randn({40, 33}, 50));
    Tensor b = test::requires_grad(test::randn({40}, 51));
    Tensor wg = test::requires_grad(w.detach().to(gpu)),
           bg = test::requires_grad(b.detach().to(gpu));
    auto make = [&](const Tensor& ww, const Tensor& bb) -> std::unique_ptr<Optimizer> {
      std::vector<ParamGroup> groups{{{ww, bb}, 0.05f, 0.01f}};
      if (std::string(kind) == "adamw") return std::make_unique<AdamW>(groups, AdamOptions{});
      return std::make_unique<SGD>(groups, SgdOptions{0.9f, 0.f, false});
    };
    auto cpu_opt = make(w, b), gpu_opt = make(wg, bg);
    Bf16Mode mode;
    for (uint64_t step = 0; step < 2; ++step) {
      Tensor x = test::randn({6, 33}, 60 + step), r = test::randn({6, 40}, 70 + step);
      cpu_opt->zero_grad();
      gpu_opt->zero_grad();
      sum(cast(mul(linear(x, w, b), r), DType::F32)).backward();
      sum(cast(mul(linear(x.to(gpu), wg, bg), r.to(gpu)), DType::F32)).backward();
      cpu_opt->step();
      gpu_opt->step();
      expect_current(wg, std::string(kind) + " on the GPU");
      test::expect_close(wg.to(Device::cpu()), w, 1e-4, 1e-5, std::string(kind) + " weights");
    }
  }
}

}  // namespace
}  // namespace mokd
