// CPU batch norm over [rows, C] (NHWC flattened): training, evaluation and backward. Activations
// (x, y, gy, gx) are stored as f32 or bf16; per-channel tensors and the math are f32.
#include <omp.h>

#include <cmath>
#include <vector>

#include "engine/cpu/cpu_backend.h"

namespace mokd {

namespace {

// Per-channel sums over rows of f(r, c), in double, with one accumulator row per thread.
template <class F>
void channel_sums(int64_t rows, int64_t C, std::vector<double>& out, F f) {
  out.assign(C, 0.0);
  bool par = rows * C > 32768;
  int nt = par ? omp_get_max_threads() : 1;
  std::vector<std::vector<double>> part(nt);
#pragma omp parallel num_threads(nt) if (par)
  {
    int t = omp_get_thread_num();
    part[t].assign(C, 0.0);
    double* acc = part[t].data();
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c) acc[c] += f(r, c);
  }
  // Fixed summation order over the thread partials: deterministic for a given thread count.
  for (auto& p : part)
    if (!p.empty())
      for (int64_t c = 0; c < C; ++c) out[c] += p[c];
}

}  // namespace

void CpuBackend::batch_norm_train(const Tensor& x, const Tensor& w, const Tensor& b,
                                  Tensor& running_mean, Tensor& running_var, float momentum,
                                  float eps, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  const BnDims d = batch_norm_train_args(DeviceType::CPU, x, w, b, running_mean, running_var, y,
                                         save_mean, save_invstd);
  const int64_t rows = d.rows, C = d.C;
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    std::vector<double> mean, m2;
    channel_sums(rows, C, mean,
                 [&](int64_t r, int64_t c) { return double(load_f32(px[r * C + c])); });
    for (auto& m : mean) m /= double(rows);
    // Two passes (mean, then squared deviations): no cancellation for large means.
    channel_sums(rows, C, m2, [&](int64_t r, int64_t c) {
      double d = load_f32(px[r * C + c]) - mean[c];
      return d * d;
    });
    float* sm = save_mean.data<float>();
    float* si = save_invstd.data<float>();
    float* rm = running_mean.data<float>();
    float* rv = running_var.data<float>();
    std::vector<float> scale(C), shift(C);
    const float* pw = w.data<float>();
    const float* pb = b.data<float>();
    for (int64_t c = 0; c < C; ++c) {
      double var = m2[c] / double(rows);
      double invstd = 1.0 / std::sqrt(var + double(eps));
      sm[c] = static_cast<float>(mean[c]);
      si[c] = static_cast<float>(invstd);
      double unbiased = m2[c] / double(rows - 1);
      rm[c] = static_cast<float>((1.0 - momentum) * rm[c] + momentum * mean[c]);
      rv[c] = static_cast<float>((1.0 - momentum) * rv[c] + momentum * unbiased);
      scale[c] = static_cast<float>(pw[c] * invstd);
      shift[c] = static_cast<float>(pb[c] - mean[c] * pw[c] * invstd);
    }
    T* py = y.data<T>();
#pragma omp parallel for if (rows * C > 65536)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c)
        py[r * C + c] = store_as<T>(load_f32(px[r * C + c]) * scale[c] + shift[c]);
  });
}

void CpuBackend::batch_norm_eval(const Tensor& x, const Tensor& w, const Tensor& b,
                                 const Tensor& running_mean, const Tensor& running_var, float eps,
                                 Tensor& y) {
  const BnDims d = batch_norm_eval_args(DeviceType::CPU, x, w, b, running_mean, running_var, y);
  const int64_t rows = d.rows, C = d.C;
  const float* pw = w.data<float>();
  const float* pb = b.data<float>();
  const float* rm = running_mean.data<float>();
  const float* rv = running_var.data<float>();
  std::vector<float> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    double invstd = 1.0 / std::sqrt(double(rv[c]) + double(eps));
    scale[c] = static_cast<float>(pw[c] * invstd);
    shift[c] = static_cast<float>(pb[c] - rm[c] * pw[c] * invstd);
  }
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for if (rows * C > 65536)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c)
        py[r * C + c] = store_as<T>(load_f32(px[r * C + c]) * scale[c] + shift[c]);
  });
}

void CpuBackend::batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                     const Tensor& mean, const Tensor& invstd, bool training,
                                     Tensor& gx, Tensor& gw, Tensor& gb) {
  const BnDims d = batch_norm_backward_args(DeviceType::CPU, gy, x, w, mean, invstd, gx, gw, gb);
  const int64_t rows = d.rows, C = d.C;
  with_activation_type(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T* px = x.data<T>();
    const T* pg = gy.data<T>();
    const float* pm = mean.data<float>();
    const float* pi = invstd.data<float>();
    const float* pw = w.data<float>();
    // sum(gy) and sum(gy * xhat) per channel: the gradients of b and w, and the two terms
    // through which the batch statistics pass the gradient back to x.
    std::vector<double> sg, sgx;
    channel_sums(rows, C, sg,
                 [&](int64_t r, int64_t c) { return double(load_f32(pg[r * C + c])); });
    channel_sums(rows, C, sgx, [&](int64_t r, int64_t c) {
      return double(load_f32(pg[r * C + c])) * (double(load_f32(px[r * C + c])) - pm[c]) * pi[c];
    });
    float* pgw = gw.data<float>();
    float* pgb = gb.data<float>();
    std::vector<float> k(C), mg(C), mgx(C);
    for (int64_t c = 0; c < C; ++c) {
      pgw[c] = static_cast<float>(sgx[c]);
      pgb[c] = static_cast<float>(sg[c]);
      k[c] = pw[c] * pi[c];
      // Training: gx = w invstd (gy - mean(gy) - xhat mean(gy xhat)); eval: gx = w invstd gy.
      mg[c] = training ? static_cast<float>(sg[c] / double(rows)) : 0.f;
      mgx[c] = training ? static_cast<float>(sgx[c] / double(rows)) : 0.f;
    }
    T* pgx = gx.data<T>();
#pragma omp parallel for if (rows * C > 65536)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c) {
        int64_t i = r * C + c;
        float xhat = (load_f32(px[i]) - pm[c]) * pi[c];
        pgx[i] = store_as<T>(k[c] * (load_f32(pg[i]) - mg[c] - xhat * mgx[c]));
      }
  });
}

}  // namespace mokd
