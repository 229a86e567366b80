// CUDA multi-tensor optimizers and the global gradient norm against the CPU reference: AdamW,
// Adam with L2 and SGD (momentum + dampening, nesterov) over 140 tensors of odd sizes in two
// parameter groups (several launches per step: the kernels take 48 / 64 / 128 tensors per launch,
// and one 300001-element tensor spans many blocks), 5 steps, relative error < 1e-5 and never NaN;
// on the device, the multi-tensor kernels equal the per-tensor ones bit for bit. Each test skips
// when no CUDA device is available. MOKD_CUDA_POISON=1 is set before the first CUDA allocation:
// fresh device memory is NaN, so an element a kernel forgets to write shows up.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "mokd/optim.h"
#include "tests/cuda_test_util.h"
#include "tests/test_util.h"

namespace mokd {
namespace {

using test::randn;
using test::rel_error;

constexpr int kTensors = 140;
constexpr int kSteps = 5;
constexpr double kTol = 1e-5;

// Odd sizes: 1, 7, 1000, 4099, one of 300001 (many blocks of one tensor), the rest spread over
// [1, 3001]; every fifth one 2-D.
Shape shape_of(int i) {
  switch (i) {
    case 0:
      return {1};
    case 1:
      return {7};
    case 2:
      return {1000};
    case 3:
      return {4099};
    case 5:
      return {300001};
    default:
      break;
  }
  int64_t n = 1 + (static_cast<int64_t>(i) * 7919) % 3001;
  if (i % 5 == 0) return {n, 3};
  return {n};
}

bool has_nan(const Tensor& t) {
  for (float v : t.to_vector())
    if (std::isnan(v)) return true;
  return false;
}

void expect_close_to_cpu(const Tensor& gpu, const Tensor& cpu, const std::string& what) {
  ASSERT_TRUE(gpu.device().is_cuda()) << what;
  ASSERT_EQ(gpu.shape(), cpu.shape()) << what;
  Tensor g = gpu.to(Device::cpu());
  EXPECT_FALSE(has_nan(g)) << what << ": NaN on the GPU";
  double e = rel_error(g, cpu);
  EXPECT_LT(e, kTol) << what << ": relative error " << e;
}

// The same initial parameters on the CPU and on the GPU.
struct Params {
  std::vector<Tensor> cpu, gpu;
};

Params make_params() {
  Params ps;
  for (int i = 0; i < kTensors; ++i) {
    Tensor c = randn(shape_of(i), 1000 + i, 0.5f);
    Tensor g = c.to(Device::cuda());
    c.set_requires_grad(true);
    g.set_requires_grad(true);
    ps.cpu.push_back(c);
    ps.gpu.push_back(g);
  }
  return ps;
}

// Group 0: even tensors (lr 1e-2, no decay); group 1: odd tensors (lr 2e-2, decay 0.05).
std::vector<ParamGroup> groups_of(const std::vector<Tensor>& ps) {
  ParamGroup a{{}, 1e-2f, 0.f}, b{{}, 2e-2f, 0.05f};
  for (int i = 0; i < kTensors; ++i) (i % 2 ? b : a).params.push_back(ps[i]);
  return {a, b};
}

using MakeOpt = std::function<std::unique_ptr<Optimizer>(std::vector<ParamGroup>)>;

// 5 steps on both devices with the same gradients (tensor 4 has none at step 2, so its own step
// count lags), then parameters and optimizer state compared.
void check_trajectory(const std::string& name, const MakeOpt& make) {
  Params ps = make_params();
  std::unique_ptr<Optimizer> oc = make(groups_of(ps.cpu)), og = make(groups_of(ps.gpu));
  for (int t = 0; t < kSteps; ++t) {
    for (int i = 0; i < kTensors; ++i) {
      if (i == 4 && t == 2) {
        ps.cpu[i].zero_grad();
        ps.gpu[i].zero_grad();
        continue;
      }
      Tensor g = randn(shape_of(i), 5000 + 1000 * t + i);
      ps.cpu[i].set_grad(g);
      ps.gpu[i].set_grad(g.to(Device::cuda()));
    }
    oc->step();
    og->step();
  }
  for (int i = 0; i < kTensors; ++i)
    expect_close_to_cpu(ps.gpu[i], ps.cpu[i], name + " param " + std::to_string(i));
  NamedTensors sc = oc->state(), sg = og->state();
  ASSERT_EQ(sc.size(), sg.size()) << name;
  for (size_t k = 0; k < sc.size(); ++k) {
    ASSERT_EQ(sc[k].first, sg[k].first) << name;
    if (sc[k].second.dtype() == DType::I64)
      EXPECT_EQ(sc[k].second.to_vector_i64(), sg[k].second.to_vector_i64()) << sc[k].first;
    else
      expect_close_to_cpu(sg[k].second, sc[k].second, name + " " + sc[k].first);
  }
}

TEST(CudaOptim, AdamWMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  check_trajectory("adamw", [](std::vector<ParamGroup> g) {
    return std::make_unique<AdamW>(std::move(g), AdamOptions{0.9f, 0.999f, 1e-8f});
  });
}

TEST(CudaOptim, AdamL2MatchesCpu) {
  SKIP_WITHOUT_CUDA();
  check_trajectory("adam", [](std::vector<ParamGroup> g) {
    return std::make_unique<Adam>(std::move(g), AdamOptions{0.8f, 0.99f, 1e-6f});
  });
}

TEST(CudaOptim, SgdNesterovMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  check_trajectory("sgd-nesterov", [](std::vector<ParamGroup> g) {
    return std::make_unique<SGD>(std::move(g), SgdOptions{0.9f, 0.f, true});
  });
}

TEST(CudaOptim, SgdMomentumDampeningMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  check_trajectory("sgd-dampening", [](std::vector<ParamGroup> g) {
    return std::make_unique<SGD>(std::move(g), SgdOptions{0.9f, 0.2f, false});
  });
}

// The global norm and the clipped gradients (clipping active, then inactive).
TEST(CudaOptim, GlobalNormMatchesCpu) {
  SKIP_WITHOUT_CUDA();
  for (float max_norm : {1.f, 1e30f}) {
    Params ps = make_params();
    for (int i = 0; i < kTensors; ++i) {
      Tensor g = randn(shape_of(i), 9000 + i, 0.1f);
      ps.cpu[i].set_grad(g);
      ps.gpu[i].set_grad(g.to(Device::cuda()));
    }
    Tensor nc = clip_grad_norm(ps.cpu, max_norm), ng = clip_grad_norm(ps.gpu, max_norm);
    const std::string what = "max_norm " + std::to_string(max_norm);
    expect_close_to_cpu(ng, nc, what + " norm");
    for (int i = 0; i < kTensors; ++i)
      expect_close_to_cpu(ps.gpu[i].grad(), ps.cpu[i].grad(),
                          what + " clipped grad " + std::to_string(i));
  }
}

// sum_squares_multi accumulates; empty tensors and empty lists leave out unchanged.
TEST(CudaOptim, SumSquaresMultiAccumulates) {
  SKIP_WITHOUT_CUDA();
  Backend& cb = backend_for(Device::cpu());
  Backend& gb = backend_for(Device::cuda());
  std::vector<Tensor> xc, xg;
  for (int i = 0; i < kTensors; ++i) {
    xc.push_back(randn(shape_of(i), 300 + i, 2.f));
    xg.push_back(xc.back().to(Device::cuda()));
  }
  xc.push_back(Tensor::zeros({0}));
  xg.push_back(Tensor::zeros({0}, DType::F32, Device::cuda()));
  std::vector<const Tensor*> pc, pg;
  for (size_t i = 0; i < xc.size(); ++i) {
    pc.push_back(&xc[i]);
    pg.push_back(&xg[i]);
  }
  Tensor oc = Tensor::scalar(0.5f), og = Tensor::scalar(0.5f, Device::cuda());
  cb.sum_squares_multi(pc, oc);
  gb.sum_squares_multi(pg, og);
  expect_close_to_cpu(og, oc, "sum_squares_multi");
  gb.sum_squares_multi({}, og);
  gb.sum_squares_multi({&xg.back()}, og);  // only an empty tensor
  expect_close_to_cpu(og, oc, "sum_squares_multi of nothing");
}

// On the device, the multi-tensor kernels give exactly the per-tensor kernels' results.
TEST(CudaOptim, MultiEqualsPerTensorOnDevice) {
  SKIP_WITHOUT_CUDA();
  Backend& gb = backend_for(Device::cuda());
  auto dev = [](const Tensor& t) { return t.to(Device::cuda()); };
  std::vector<Tensor> p1, m1, v1, p2, m2, v2, grads;
  for (int i = 0; i < kTensors; ++i) {
    Shape s = shape_of(i);
    Tensor p = randn(s, 700 + i), m = randn(s, 800 + i, 0.1f);
    Tensor v = test::uniform(s, 900 + i, 0.f, 0.01f);
    for (auto* list : {&p1, &p2}) list->push_back(dev(p));
    for (auto* list : {&m1, &m2}) list->push_back(dev(m));
    for (auto* list : {&v1, &v2}) list->push_back(dev(v));
    grads.push_back(dev(randn(s, 600 + i)));
  }
  for (bool decoupled : {true, false}) {
    std::vector<AdamTensorRef> list;
    for (int i = 0; i < kTensors; ++i) {
      AdamHyper h;
      h.lr = i % 2 ? 2e-2f : 1e-2f;
      h.weight_decay = i % 2 ? 0.05f : 0.f;
      h.step = 3 + i % 3;
      h.decoupled = decoupled;
      gb.adam_update(p1[i], grads[i], m1[i], v1[i], h);
      list.push_back({p2[i], grads[i], m2[i], v2[i], h});
    }
    gb.adam_update_multi(list);
    for (int i = 0; i < kTensors; ++i) {
      const std::string what =
          std::string(decoupled ? "adamw" : "adam") + " tensor " + std::to_string(i);
      EXPECT_EQ(p2[i].to(Device::cpu()).to_vector(), p1[i].to(Device::cpu()).to_vector()) << what;
      EXPECT_EQ(m2[i].to(Device::cpu()).to_vector(), m1[i].to(Device::cpu()).to_vector()) << what;
      EXPECT_EQ(v2[i].to(Device::cpu()).to_vector(), v1[i].to(Device::cpu()).to_vector()) << what;
    }
  }
  for (bool first : {true, false}) {
    std::vector<SgdTensorRef> list;
    for (int i = 0; i < kTensors; ++i) {
      SgdHyper h;
      h.lr = 0.05f;
      h.momentum = 0.9f;
      h.weight_decay = i % 2 ? 0.01f : 0.f;
      h.nesterov = true;
      h.first_step = first;
      gb.sgd_update(p1[i], grads[i], m1[i], h);
      list.push_back({p2[i], grads[i], m2[i], h});
    }
    gb.sgd_update_multi(list);
    for (int i = 0; i < kTensors; ++i) {
      EXPECT_EQ(p2[i].to(Device::cpu()).to_vector(), p1[i].to(Device::cpu()).to_vector())
          << "sgd " << i;
      EXPECT_EQ(m2[i].to(Device::cpu()).to_vector(), m1[i].to(Device::cpu()).to_vector())
          << "sgd " << i;
    }
  }
  // scale_multi against the broadcast multiply clip_grad_norm used before.
  Tensor s = Tensor::scalar(0.37f, Device::cuda());
  std::vector<Tensor*> ptrs;
  for (int i = 0; i < kTensors; ++i) {
    gb.binary(BinaryOp::Mul, p1[i], s.expand_view(p1[i].shape()), p1[i]);
    ptrs.push_back(&p2[i]);
  }
  gb.scale_multi(ptrs, s);
  for (int i = 0; i < kTensors; ++i)
    EXPECT_EQ(p2[i].to(Device::cpu()).to_vector(), p1[i].to(Device::cpu()).to_vector())
        << "scale " << i;
}

TEST(CudaOptim, BadEntryIsNamed) {
  SKIP_WITHOUT_CUDA();
  Backend& gb = backend_for(Device::cuda());
  auto z = [](int64_t n) { return Tensor::zeros({n}, DType::F32, Device::cuda()); };
  std::vector<AdamTensorRef> list = {{z(4), z(4), z(4), z(4), AdamHyper{}},
                                     {z(4), z(5), z(4), z(4), AdamHyper{}}};
  test::expect_error([&] { gb.adam_update_multi(list); },
                     {"adam_update_multi entry 1", "grad", "[5]", "[4]"});
  std::vector<SgdTensorRef> sl = {{z(4), z(4), Tensor::zeros({4}), SgdHyper{0.1f, 0.9f}}};
  test::expect_error([&] { gb.sgd_update_multi(sl); },
                     {"sgd_update_multi entry 0", "momentum_buffer", "cuda"});
  gb.adam_update_multi({});  // nothing to do
  gb.sgd_update_multi({});
}

}  // namespace
}  // namespace mokd
