// CPU microbenchmarks of the engine's hot ops at ViT-Tiny-like shapes (D=192, MLP 768, N=197),
// with plain Eigen GEMM on the same shapes as the baseline for our matmul, a frozen teacher's
// forward with its batch norms as separate passes (arg 0) or folded into the convolutions (1),
// and the ViT block's fused epilogues (bias_gelu, add_layer_norm) against their compositions.
//
// Rows: a DeiT-Tiny step sees B*N = 256*197 token rows; on a 2-core CI machine that is too slow
// to repeat, so these use 32*197 = 6304 rows (GFLOP/s and GB/s are rates, comparable across
// sizes as long as the matrices stay well past cache size).
//
//   cmake -S . -B build-bench -G Ninja -DMOKD_BUILD_BENCH=ON && ninja -C build-bench mokd_bench
//   build-bench/mokd_bench --benchmark_min_time=0.2
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cmath>

#include "engine/backend.h"
#include "engine/ops.h"
#include "models/registry.h"

namespace {

using namespace mokd;

constexpr int64_t kTokens = 197;
constexpr int64_t kBatch = 32;
constexpr int64_t kRows = kBatch * kTokens;  // 6304
constexpr int64_t kDim = 192;
constexpr int64_t kHeads = 3;
constexpr int64_t kHeadDim = 64;

Tensor random_tensor(const Shape& shape, uint64_t seed, float std = 1.f) {
  Tensor t = Tensor::empty(shape);
  Generator g(seed, Stream::Init);
  normal_(t, 0.f, std, g);
  return t;
}

// A rate counter: `per_iter` units (GFLOP or GB) per iteration, printed as e.g. "GFLOP=52/s".
void set_rate(benchmark::State& state, const char* name, double per_iter) {
  state.counters[name] = benchmark::Counter(per_iter * static_cast<double>(state.iterations()),
                                            benchmark::Counter::kIsRate);
}

// Linear layers of a transformer block: (in, out) = qkv (192, 576), MLP fc1 (192, 768),
// MLP fc2 (768, 192), projection (192, 192).
void linear_args(benchmark::internal::Benchmark* b) {
  b->Args({kDim, 3 * kDim})->Args({kDim, 4 * kDim})->Args({4 * kDim, kDim})->Args({kDim, kDim});
  b->ArgNames({"in", "out"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

// Our matmul: ops::linear (x [rows, in] @ w[out, in]^T, no bias) = one backend gemm.
void BM_MokdMatmul(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1);
  Tensor x = random_tensor({kRows, in}, 1), w = random_tensor({out, in}, 2, 0.05f);
  NoGrad ng;
  for (auto _ : state) {
    Tensor y = linear(x, w, Tensor());
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_rate(state, "GFLOP", 2.0 * kRows * in * out * 1e-9);
  state.counters["threads"] = Eigen::nbThreads();
}
BENCHMARK(BM_MokdMatmul)->Apply(linear_args);

// The baseline: Eigen's own GEMM on the same row-major shapes, output preallocated.
void BM_EigenGemm(benchmark::State& state) {
  using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const int64_t in = state.range(0), out = state.range(1);
  RowMat x = RowMat::Random(kRows, in), w = RowMat::Random(out, in) * 0.05f;
  RowMat y(kRows, out);
  for (auto _ : state) {
    y.noalias() = x * w.transpose();
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, "GFLOP", 2.0 * kRows * in * out * 1e-9);
  state.counters["threads"] = Eigen::nbThreads();
}
BENCHMARK(BM_EigenGemm)->Apply(linear_args);

// Forward + backward of a linear layer with bias (three GEMMs and a bias reduction).
void BM_MokdLinearTrain(benchmark::State& state) {
  const int64_t in = state.range(0), out = state.range(1);
  Tensor x = random_tensor({kRows, in}, 1), w = random_tensor({out, in}, 2, 0.05f);
  Tensor b = random_tensor({out}, 3);
  x.set_requires_grad(true);
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor r = random_tensor({kRows, out}, 4);
  for (auto _ : state) {
    sum(mul(linear(x, w, b), r)).backward();
    x.zero_grad();
    w.zero_grad();
    b.zero_grad();
  }
  set_rate(state, "GFLOP", 3 * 2.0 * kRows * in * out * 1e-9);
}
BENCHMARK(BM_MokdLinearTrain)
    ->Args({kDim, 4 * kDim})
    ->ArgNames({"in", "out"})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// conv2d, NHWC: [32, 28, 28, 32] -> 64 channels, 3x3, stride 1, padding 1.
void BM_Conv2d(benchmark::State& state) {
  const int64_t n = 32, h = 28, wd = 28, c = 32, o = 64;
  Tensor x = random_tensor({n, h, wd, c}, 1), w = random_tensor({o, 3, 3, c}, 2, 0.05f);
  Tensor bias = random_tensor({o}, 3);
  Conv2dParams p;
  p.pad_h = p.pad_w = 1;
  NoGrad ng;
  for (auto _ : state) {
    Tensor y = conv2d(x, w, bias, p);
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_rate(state, "GFLOP", 2.0 * n * h * wd * o * 9 * c * 1e-9);
}
BENCHMARK(BM_Conv2d)->Unit(benchmark::kMillisecond)->UseRealTime();

// The demo's teacher (resnet_fmnist_small), eval forward of 64 images, batch norms unfolded (0)
// or folded (1, Model::fold_batch_norm; the bias, residual and ReLU after each convolution then
// run as one pass, bias_act).
void BM_TeacherForward(benchmark::State& state) {
  std::unique_ptr<Model> m = create_model("resnet_fmnist_small");
  m->eval();
  if (state.range(0)) m->fold_batch_norm();
  Tensor x = random_tensor({64, 28, 28, 1}, 4);
  NoGrad ng;
  for (auto _ : state) {
    Tensor y = m->forward(x);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["images"] = benchmark::Counter(64.0 * static_cast<double>(state.iterations()),
                                                benchmark::Counter::kIsRate);
  state.SetLabel(state.range(0) ? "batch norm folded, fused epilogues" : "batch norm unfolded");
}
BENCHMARK(BM_TeacherForward)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

// layer_norm over (rows, 192): bytes = read x + write y (weights are negligible).
void BM_LayerNorm(benchmark::State& state) {
  Tensor x = random_tensor({kRows, kDim}, 1), w = random_tensor({kDim}, 2),
         b = random_tensor({kDim}, 3);
  NoGrad ng;
  for (auto _ : state) {
    Tensor y = layer_norm(x, w, b, 1e-6f);
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_rate(state, "GB", 2.0 * kRows * kDim * sizeof(float) * 1e-9);
}
BENCHMARK(BM_LayerNorm)->Unit(benchmark::kMicrosecond)->UseRealTime();

// The ViT MLP's fc1 epilogue on (rows, 768): gelu(x + bias) as the composition (arg fused = 0:
// Backend::bias_gelu, an add and a GELU pass) or fused (1, bias_gelu), forward (backward = 0) or
// backward (1: gx and the bias's column sums). Bytes are the fused pass's: forward reads x and
// writes y, backward reads g and x and writes gx (f32), so both rows print comparable GB/s.
void BM_BiasGelu(benchmark::State& state) {
  const bool fused = state.range(0), bwd = state.range(1);
  const int64_t c = 4 * kDim;
  Tensor x = random_tensor({kRows, c}, 1), b = random_tensor({c}, 2),
         g = random_tensor({kRows, c}, 3);
  Tensor y = Tensor::empty({kRows, c}), gb = Tensor::empty({c});
  Backend& be = backend_for(x);
  for (auto _ : state) {
    if (!bwd)
      fused ? be.bias_gelu(x, b, y) : be.Backend::bias_gelu(x, b, y);
    else
      fused ? be.bias_gelu_backward(g, x, b, y, &gb)
            : be.Backend::bias_gelu_backward(g, x, b, y, &gb);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * (bwd ? 3 : 2) * x.nbytes());
  state.SetLabel(std::string(fused ? "fused" : "composition") + (bwd ? ", backward" : ", forward"));
}
BENCHMARK(BM_BiasGelu)
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->ArgNames({"fused", "backward"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// A block's residual add and norm2 on (rows, 192): s = x + r, n = layer_norm(s) as the
// composition (fused = 0: Backend::add_layer_norm, an add then layer_norm) or fused (1), forward
// or backward (gx = gs + layer_norm_backward(gn), gw, gb). Bytes are the fused pass's: forward
// reads x, r and writes s, n; backward reads gn, gs, s and writes gx (f32).
void BM_AddLayerNorm(benchmark::State& state) {
  const bool fused = state.range(0), bwd = state.range(1);
  Tensor x = random_tensor({kRows, kDim}, 1), r = random_tensor({kRows, kDim}, 2);
  Tensor w = random_tensor({kDim}, 3), b = random_tensor({kDim}, 4);
  Tensor s = Tensor::empty({kRows, kDim}), n = Tensor::empty({kRows, kDim});
  Tensor mean = Tensor::empty({kRows}), rstd = Tensor::empty({kRows});
  Tensor gw = Tensor::empty({kDim}), gb = Tensor::empty({kDim});
  Backend& be = backend_for(x);
  be.add_layer_norm(x, r, &w, &b, 1e-6f, s, n, mean, rstd);  // statistics for backward
  for (auto _ : state) {
    if (!bwd) {
      if (fused)
        be.add_layer_norm(x, r, &w, &b, 1e-6f, s, n, mean, rstd);
      else
        be.Backend::add_layer_norm(x, r, &w, &b, 1e-6f, s, n, mean, rstd);
    } else if (fused) {
      be.add_layer_norm_backward(x, &r, s, &w, mean, rstd, n, &gw, &gb);
    } else {
      be.Backend::add_layer_norm_backward(x, &r, s, &w, mean, rstd, n, &gw, &gb);
    }
    benchmark::DoNotOptimize(n.raw_data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * 4 * x.nbytes());
  state.SetLabel(std::string(fused ? "fused" : "composition") + (bwd ? ", backward" : ", forward"));
}
BENCHMARK(BM_AddLayerNorm)
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->ArgNames({"fused", "backward"})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// softmax over the last dim of (rows, 192): read x + write y.
void BM_Softmax(benchmark::State& state) {
  Tensor x = random_tensor({kRows, kDim}, 1);
  NoGrad ng;
  for (auto _ : state) {
    Tensor y = softmax(x, -1);
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_rate(state, "GB", 2.0 * kRows * kDim * sizeof(float) * 1e-9);
}
BENCHMARK(BM_Softmax)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Attention forward, [B*H = 32*3, N = 197, D = 64]: q k^T and P v, 4 B H N^2 D flops.
void BM_Attention(benchmark::State& state) {
  Shape s{kBatch, kHeads, kTokens, kHeadDim};
  Tensor q = random_tensor(s, 1), k = random_tensor(s, 2), v = random_tensor(s, 3);
  const float scale = 1.f / std::sqrt(static_cast<float>(kHeadDim));
  NoGrad ng;
  for (auto _ : state) {
    Tensor y = scaled_dot_product_attention(q, k, v, scale);
    benchmark::DoNotOptimize(y.raw_data());
  }
  set_rate(state, "GFLOP", 4.0 * kBatch * kHeads * kTokens * kTokens * kHeadDim * 1e-9);
}
BENCHMARK(BM_Attention)->Unit(benchmark::kMillisecond)->UseRealTime();

// Attention forward + backward: 7 products of 2 B H N^2 D flops each (forward q k^T and P v;
// backward recomputes q k^T, then gout v^T, dS k, dS^T q and P^T gout).
void BM_AttentionTrain(benchmark::State& state) {
  Shape s{kBatch, kHeads, kTokens, kHeadDim};
  Tensor q = random_tensor(s, 1), k = random_tensor(s, 2), v = random_tensor(s, 3);
  Tensor r = random_tensor(s, 4);
  q.set_requires_grad(true);
  k.set_requires_grad(true);
  v.set_requires_grad(true);
  const float scale = 1.f / std::sqrt(static_cast<float>(kHeadDim));
  for (auto _ : state) {
    sum(mul(scaled_dot_product_attention(q, k, v, scale), r)).backward();
    q.zero_grad();
    k.zero_grad();
    v.zero_grad();
  }
  set_rate(state, "GFLOP", 14.0 * kBatch * kHeads * kTokens * kTokens * kHeadDim * 1e-9);
}
BENCHMARK(BM_AttentionTrain)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
