// GPU microbenchmarks (Google Benchmark): GEMM f32/bf16 through the backend vs a direct cuBLASLt
// call, layer_norm and softmax at (256*197, 192) in GB/s vs a device-to-device copy, attention at
// B*H = 256*3, N = 197, D = 64, conv2d, AdamW over 5M parameters, and a frozen resnet50 teacher's
// bf16 forward with its batch norms unfolded or folded into the convolutions, the ViT block's fused
// epilogues against their compositions. Every benchmark skips
// (with a reason) when no CUDA device is available or the build has no CUDA backend.
#include <benchmark/benchmark.h>

#include <algorithm>

#include "engine/ops.h"
#include "engine/precision.h"
#include "engine/weight_copies.h"
#include "models/registry.h"

#ifdef MOKD_WITH_CUDA
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "engine/cuda/cuda_backend.h"
#endif

namespace mokd {
namespace {

bool skip_without_gpu(benchmark::State& state) {
#ifdef MOKD_WITH_CUDA
  if (device_available(Device::cuda())) return false;
#endif
  state.SkipWithError("no CUDA device (or a CPU-only build): GPU benchmarks skipped");
  return true;
}

#ifdef MOKD_WITH_CUDA
Tensor gpu_randn(const Shape& s, uint64_t seed, DType dt = DType::F32) {
  Tensor t = Tensor::empty(s, DType::F32, Device::cuda());
  Generator g(seed, Stream::Init);
  normal_(t, 0.f, 1.f, g);
  return dt == DType::F32 ? t : t.to(dt);
}
void sync() { cuda_backend()->synchronize(); }

// Seconds per launch of f: CUDA events around `iters` back-to-back launches, after as many
// untimed ones (clocks ramp up), best of three such windows (a window caught by a clock change or
// a host hiccup does not set the result).
template <class F>
double time_gpu(F f, int iters = 20) {
  for (int i = 0; i < iters; ++i) f();
  sync();
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  double best = 1e30;
  for (int w = 0; w < 3; ++w) {
    cudaEventRecord(a, cuda_backend()->stream());
    for (int i = 0; i < iters; ++i) f();
    cudaEventRecord(b, cuda_backend()->stream());
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    best = std::min(best, ms * 1e-3 / iters);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return best;
}
#endif

void BM_GpuGemm(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const DType dt = state.range(3) ? DType::BF16 : DType::F32;
  Tensor a = gpu_randn({M, K}, 1, dt), b = gpu_randn({K, N}, 2, dt);
  Tensor c = Tensor::empty({M, N}, DType::F32, Device::cuda());
  double s = 0;
  for (auto _ : state) {
    s = time_gpu([&] { backend_for(c).gemm(a, b, c, false, false, 1.f, 0.f); });
    state.SetIterationTime(s);
  }
  state.counters["TFLOPs"] = 2.0 * M * N * K / s / 1e12;
  state.SetLabel(dt == DType::BF16 ? "bf16 (ours)" : "f32 (ours)");
#endif
}
BENCHMARK(BM_GpuGemm)
    ->Args({8192, 8192, 8192, 0})
    ->Args({8192, 8192, 8192, 1})
    ->Args({50432, 768, 192, 1})
    ->UseManualTime()
    ->Iterations(1);

// The same product through a bare cuBLASLt call (default heuristics): the ceiling ours should meet.
void BM_GpuGemmDirectLt(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  const int64_t M = state.range(0), N = state.range(1), K = state.range(2);
  const bool bf = state.range(3);
  const DType dt = bf ? DType::BF16 : DType::F32;
  Tensor a = gpu_randn({M, K}, 1, dt), b = gpu_randn({K, N}, 2, dt);
  Tensor c = Tensor::empty({M, N}, DType::F32, Device::cuda());
  size_t ws_bytes = 0;
  void* ws = cuda_backend()->lt_workspace(ws_bytes);
  cublasLtHandle_t h = cuda_backend()->lt_handle();
  cublasLtMatmulDesc_t op;
  cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  cudaDataType_t at = bf ? CUDA_R_16BF : CUDA_R_32F;
  cublasLtMatrixLayout_t lb, la, lc;  // column-major: C^T[N, M] = B^T[N, K] A^T[K, M]
  cublasLtMatrixLayoutCreate(&lb, at, N, K, N);
  cublasLtMatrixLayoutCreate(&la, at, K, M, K);
  cublasLtMatrixLayoutCreate(&lc, CUDA_R_32F, N, M, N);
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulPreferenceCreate(&pref);
  uint64_t wsb = ws_bytes;
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb,
                                       sizeof(wsb));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  cublasLtMatmulAlgoGetHeuristic(h, op, lb, la, lc, lc, pref, 1, &res, &found);
  float one = 1.f, zero = 0.f;
  double s = 0;
  for (auto _ : state) {
    if (found < 1) {
      state.SkipWithError("cuBLASLt found no algorithm");
      break;
    }
    s = time_gpu([&] {
      cublasLtMatmul(h, op, &one, b.raw_data(), lb, a.raw_data(), la, &zero, c.raw_data(), lc,
                     c.raw_data(), lc, &res.algo, ws, ws_bytes, cuda_backend()->stream());
    });
    state.SetIterationTime(s);
  }
  state.counters["TFLOPs"] = s > 0 ? 2.0 * M * N * K / s / 1e12 : 0;
  state.SetLabel(bf ? "bf16 (direct cuBLASLt)" : "f32 (direct cuBLASLt)");
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(op);
#endif
}
BENCHMARK(BM_GpuGemmDirectLt)
    ->Args({8192, 8192, 8192, 0})
    ->Args({8192, 8192, 8192, 1})
    ->Args({50432, 768, 192, 1})
    ->UseManualTime()
    ->Iterations(1);

// Row-wise kernels at ViT-Tiny's activation size, in GB/s of compulsory traffic, and the
// device-to-device copy bandwidth of the same bytes as the reference.
void BM_GpuRowwise(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  const int64_t rows = 256 * 197, d = 192;
  Tensor x = gpu_randn({rows, d}, 3), y = Tensor::empty({rows, d}, DType::F32, Device::cuda());
  Tensor w = gpu_randn({d}, 4), b = gpu_randn({d}, 5);
  Tensor mean = Tensor::empty({rows}, DType::F32, Device::cuda()), rstd = mean.clone();
  Backend& be = backend_for(x);
  const int which = static_cast<int>(state.range(0));
  double s = 0;
  for (auto _ : state) {
    if (which == 0)
      s = time_gpu([&] { be.copy(x, y); }, 200);
    else if (which == 1)
      s = time_gpu([&] { be.layer_norm(x, &w, &b, 1e-6f, y, mean, rstd); }, 200);
    else
      s = time_gpu([&] { be.softmax(x, y, false); }, 200);
    state.SetIterationTime(s);
  }
  state.counters["GB/s"] = 2.0 * x.nbytes() / s / 1e9;  // read x, write y
  state.SetLabel(which == 0 ? "d2d copy" : which == 1 ? "layer_norm" : "softmax");
#endif
}
BENCHMARK(BM_GpuRowwise)->Arg(0)->Arg(1)->Arg(2)->UseManualTime()->Iterations(1);

// The ViT block's fused epilogues at DeiT-Tiny's training shapes (256*197 rows), bf16 as the
// bf16 mode runs them: op 0 bias_gelu on (rows, 768), 1 add_layer_norm on (rows, 192); the
// composition (fused = 0, Backend's default) or the fused kernel (1), forward or backward. GB/s
// from the fused pass's bytes (bias_gelu: 2 and 3 activations, add_layer_norm: 4 each way).
void BM_GpuFusedEpilogue(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  const bool ln = state.range(0), fused = state.range(1), bwd = state.range(2);
  const int64_t rows = 256 * 197, c = ln ? 192 : 768;
  const Device dev = Device::cuda();
  Tensor x = gpu_randn({rows, c}, 21, DType::BF16), r = gpu_randn({rows, c}, 22, DType::BF16);
  Tensor bias = gpu_randn({c}, 23), w = gpu_randn({c}, 24);
  Tensor out = Tensor::empty({rows, c}, DType::BF16, dev), s2 = out.clone();
  Tensor mean = Tensor::empty({rows}, DType::F32, dev), rstd = mean.clone();
  Tensor gw = Tensor::empty({c}, DType::F32, dev), gb = gw.clone();
  Backend& be = backend_for(x);
  const bool fused_before = cuda_fused_epilogues();
  cuda_set_fused_epilogues(true);
  be.add_layer_norm(x, r, &w, &bias, 1e-6f, s2, out, mean, rstd);  // statistics for backward
  auto step = [&] {
    if (!ln && !bwd)
      fused ? be.bias_gelu(x, bias, out) : be.Backend::bias_gelu(x, bias, out);
    else if (!ln)
      fused ? be.bias_gelu_backward(r, x, bias, out, &gb)
            : be.Backend::bias_gelu_backward(r, x, bias, out, &gb);
    else if (!bwd)
      fused ? be.add_layer_norm(x, r, &w, &bias, 1e-6f, s2, out, mean, rstd)
            : be.Backend::add_layer_norm(x, r, &w, &bias, 1e-6f, s2, out, mean, rstd);
    else
      fused ? be.add_layer_norm_backward(x, &r, s2, &w, mean, rstd, out, &gw, &gb)
            : be.Backend::add_layer_norm_backward(x, &r, s2, &w, mean, rstd, out, &gw, &gb);
  };
  double t = 0;
  for (auto _ : state) {
    t = time_gpu(step, 50);
    state.SetIterationTime(t);
  }
  cuda_set_fused_epilogues(fused_before);
  const int64_t acts = ln ? 4 : (bwd ? 3 : 2);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * acts * x.nbytes());
  state.SetLabel(std::string(ln ? "add_layer_norm" : "bias_gelu") + " bf16, " +
                 (fused ? "fused" : "composition") + (bwd ? ", backward" : ", forward"));
#endif
}
BENCHMARK(BM_GpuFusedEpilogue)
    ->ArgsProduct({{0, 1}, {0, 1}, {0, 1}})
    ->ArgNames({"op", "fused", "backward"})
    ->UseManualTime()
    ->Iterations(1);

void BM_GpuAttention(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  const int64_t B = 256, H = 3, N = 197, D = 64;
  Tensor q = gpu_randn({B, H, N, D}, 6), k = gpu_randn({B, H, N, D}, 7),
         v = gpu_randn({B, H, N, D}, 8);
  Tensor o = Tensor::empty({B, H, N, D}, DType::F32, Device::cuda());
  Tensor lse = Tensor::empty({B, H, N}, DType::F32, Device::cuda());
  Tensor gq = o.clone(), gk = o.clone(), gv = o.clone();
  Backend& be = backend_for(q);
  const bool bwd = state.range(0);
  double s = 0;
  for (auto _ : state) {
    if (!bwd)
      s = time_gpu([&] { be.attention(q, k, v, 0.125f, o, lse); }, 5);
    else
      s = time_gpu([&] { be.attention_backward(q, k, v, o, lse, o, 0.125f, gq, gk, gv); }, 5);
    state.SetIterationTime(s);
  }
  double flops = 4.0 * B * H * N * N * D * (bwd ? 2.5 : 1.0);
  state.counters["TFLOPs"] = flops / s / 1e12;
  state.SetLabel(bwd ? "attention backward" : "attention forward");
#endif
}
BENCHMARK(BM_GpuAttention)->Arg(0)->Arg(1)->UseManualTime()->Iterations(1);

// Attention under the bf16 mode (engine/ops/attention.cpp: batched bf16 GEMMs around an f32
// softmax), forward, at the same shape: the op as a ViT block calls it.
void BM_GpuAttentionBf16Products(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  const int64_t B = 256, H = 3, N = 197, D = 64;
  Tensor q = gpu_randn({B, H, N, D}, 6), k = gpu_randn({B, H, N, D}, 7),
         v = gpu_randn({B, H, N, D}, 8);
  set_matmul_precision(MatmulPrecision::BF16);
  NoGrad ng;
  double s = 0;
  for (auto _ : state) {
    s = time_gpu([&] { scaled_dot_product_attention(q, k, v, 0.125f); }, 5);
    state.SetIterationTime(s);
  }
  set_matmul_precision(MatmulPrecision::F32);
  state.counters["TFLOPs"] = 4.0 * B * H * N * N * D / s / 1e12;
  state.SetLabel("attention fwd, bf16 mode");
#endif
}
BENCHMARK(BM_GpuAttentionBf16Products)->UseManualTime()->Iterations(1);

void BM_GpuConv2d(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  // A ResNet-ish 3x3 conv: [64, 56, 56, 64] -> 64 channels.
  Tensor x = gpu_randn({64, 56, 56, 64}, 9), w = gpu_randn({64, 3, 3, 64}, 10);
  Tensor y = Tensor::empty({64, 56, 56, 64}, DType::F32, Device::cuda());
  Conv2dParams p{1, 1, 1, 1, 1};
  Backend& be = backend_for(x);
  double s = 0;
  for (auto _ : state) {
    s = time_gpu([&] { be.conv2d(x, w, nullptr, p, y); }, 10);
    state.SetIterationTime(s);
  }
  state.counters["TFLOPs"] = 2.0 * 64 * 56 * 56 * 64 * 9 * 64 / s / 1e12;
  state.SetLabel(cuda_tf32() ? "conv2d 3x3 f32 (tf32)" : "conv2d 3x3 f32");
#endif
}
BENCHMARK(BM_GpuConv2d)->UseManualTime()->Iterations(1);

// resnet50 (timm's layout, random weights) as a frozen teacher: eval forward of 128 images at
// 224 px in bf16, batch norms as their own passes (arg 0) or folded (Model::fold_batch_norm) with
// the bias, residual and ReLU as separate passes (1) or fused into one (2, bias_act).
void BM_GpuTeacherForward(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  std::unique_ptr<Model> m = create_model("resnet50");
  m->to(Device::cuda());
  m->eval();
  if (state.range(0)) m->fold_batch_norm();
  const bool fused_before = cuda_fused_epilogues();
  cuda_set_fused_epilogues(state.range(0) == 2);
  // As the distiller does: one bf16 copy of each weight, made once.
  for (const auto& [name, p] : m->named_parameters())
    if (can_keep_bf16_copy(p)) make_bf16_copy(p);
  ScopedPrecision bf16(MatmulPrecision::BF16);
  Tensor x = gpu_randn({128, 224, 224, 3}, 11, DType::BF16);
  NoGrad ng;
  double s = 0;
  for (auto _ : state) {
    s = time_gpu([&] { (void)m->forward(x); }, 5);
    state.SetIterationTime(s);
  }
  cuda_set_fused_epilogues(fused_before);
  state.counters["images_per_s"] = 128.0 / s;
  const char* labels[] = {"resnet50 bf16, unfolded", "resnet50 bf16, folded, unfused epilogues",
                          "resnet50 bf16, folded, fused epilogues (bias_act)"};
  state.SetLabel(labels[state.range(0)]);
#endif
}
BENCHMARK(BM_GpuTeacherForward)->DenseRange(0, 2)->UseManualTime()->Iterations(1);

void BM_GpuAdamW(benchmark::State& state) {
  if (skip_without_gpu(state)) return;
#ifdef MOKD_WITH_CUDA
  const int64_t n = 5000000;
  Tensor p = gpu_randn({n}, 11), g = gpu_randn({n}, 12);
  Tensor m = Tensor::zeros({n}, DType::F32, Device::cuda()), v = m.clone();
  AdamHyper h;
  h.weight_decay = 0.05f;
  Backend& be = backend_for(p);
  double s = 0;
  for (auto _ : state) {
    s = time_gpu([&] { be.adam_update(p, g, m, v, h); });
    state.SetIterationTime(s);
  }
  state.counters["GB/s"] = 28.0 * n / s / 1e9;
  state.SetLabel("adamw 5M params");
#endif
}
BENCHMARK(BM_GpuAdamW)->UseManualTime()->Iterations(1);

}  // namespace
}  // namespace mokd
