// CUDA backend: registration, stream and handles, input checks, and the kernels that are thin
// launches of kernels/*.cu (copies, random, elementwise, reductions, softmax, layer/batch norm,
// pooling, attention, one-hot, optimizers). GEMM: gemm_cublaslt.cpp; convolution: cudnn_conv.cpp.
#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>

#include "engine/cuda/check.h"
#include "engine/kernel_args.h"
#include "kernels/launch.cuh"

namespace mokd {

namespace {

CudaBackend* g_backend = nullptr;
CudaCachingAllocator* g_allocator = nullptr;

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

std::atomic<bool> g_tf32{env_flag("MOKD_TF32")};

// Registers the backend only when the runtime sees a device: on a machine without one
// device_available(Device::cuda()) stays false and nothing else touches CUDA. Both objects are
// leaked on purpose: tensors in static storage may outlive any destruction order.
struct Registrar {
  Registrar() {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
      (void)cudaGetLastError();
      return;
    }
    g_allocator = new CudaCachingAllocator(0);
    g_backend = new CudaBackend(0);
    register_allocator(DeviceType::CUDA, g_allocator);
    register_backend(DeviceType::CUDA, g_backend);
  }
};
Registrar g_registrar;

const float* cf(const Tensor& t) { return static_cast<const float*>(t.raw_data()); }
float* mf(Tensor& t) { return static_cast<float*>(t.raw_data()); }
const float* cf_opt(const Tensor* t) { return t ? cf(*t) : nullptr; }
float* mf_opt(Tensor* t) { return t ? mf(*t) : nullptr; }

kernels::StridedDesc strided_desc(const char* k, const Shape& shape, const Shape& sa,
                                  const Shape& sb) {
  MOKD_CHECK(shape.size() <= static_cast<size_t>(kernels::kMaxDims), k, ": rank ", shape.size(),
             " of ", shape_str(shape), " exceeds the CUDA backend's limit of ", kernels::kMaxDims);
  kernels::StridedDesc d;
  d.rank = static_cast<int>(shape.size());
  for (int i = 0; i < d.rank; ++i) {
    d.shape[i] = shape[i];
    d.sa[i] = sa[i];
    d.sb[i] = sb[i];
  }
  return d;
}

}  // namespace

CudaBackend* cuda_backend() { return g_backend; }
CudaCachingAllocator* cuda_allocator() { return g_allocator; }
void cuda_set_tf32(bool on) { g_tf32 = on; }
bool cuda_tf32() { return g_tf32; }

cudaStream_t cuda_compute_stream() { return g_backend ? g_backend->stream() : nullptr; }

void cuda_expect_on_gpu(const Tensor& t, const char* kernel, const char* arg) {
  expect_on(t, DeviceType::CUDA, kernel, arg);
}

void cuda_expect_f32(const Tensor& t, const char* kernel, const char* arg) {
  expect_f32(t, DeviceType::CUDA, kernel, arg);
}

void cuda_rethrow_with_context(const char* op, std::initializer_list<const Tensor*> tensors,
                               const std::exception& e) {
  std::string shapes;
  for (const Tensor* t : tensors) {
    if (!t) continue;
    if (!shapes.empty()) shapes += ", ";
    shapes += t->defined() ? t->str() : "undefined";
  }
  throw Error(detail::concat(op, " on cuda failed (", shapes, "): ", e.what()));
}

// ---- stream, handles, scratch ----

// The library handles are created on first use, each on its own: a cuBLASLt or cuDNN that fails
// to load then fails only the ops that need it, not every copy and kernel.
void CudaBackend::init() {
  std::call_once(once_, [this] {
    MOKD_CUDA_CHECK(cudaSetDevice(device_));
    MOKD_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  });
}

cudaStream_t CudaBackend::stream() {
  init();
  return stream_;
}
cublasLtHandle_t CudaBackend::lt_handle() {
  init();
  std::call_once(lt_once_, [this] { MOKD_CUBLAS_CHECK(cublasLtCreate(&lt_)); });
  return lt_;
}
cudnnHandle_t CudaBackend::cudnn_handle() {
  init();
  std::call_once(dnn_once_, [this] {
    cudnnHandle_t h = nullptr;
    MOKD_CUDNN_CHECK(cudnnCreate(&h));
    MOKD_CUDNN_CHECK(cudnnSetStream(h, stream_));
    dnn_ = h;
  });
  return dnn_;
}

void CudaBackend::synchronize() { MOKD_CUDA_CHECK(cudaStreamSynchronize(stream())); }

void* CudaBackend::lt_workspace(size_t& bytes) {
  constexpr size_t kWs = size_t(32) << 20;  // cuBLASLt's recommendation for Hopper
  std::lock_guard<std::mutex> lock(ws_mu_);
  if (!lt_ws_.defined()) lt_ws_ = Tensor::empty({static_cast<int64_t>(kWs / 8)}, DType::F64, device());
  bytes = kWs;
  return lt_ws_.raw_data();
}

Tensor CudaBackend::scratch(int64_t n_doubles) {
  return Tensor::empty({n_doubles < 1 ? 1 : n_doubles}, DType::F64, device());
}

// ---- memory ----

void CudaBackend::copy(const Tensor& src, Tensor& dst) {
  MOKD_CHECK(src.device().is_cuda() && dst.device().is_cuda(), "cuda copy: ", src.str(), " -> ",
             dst.str());
  MOKD_CHECK(src.shape() == dst.shape(), "cuda copy: shapes differ: ", src.str(), " -> ", dst.str());
  if (src.numel() == 0) return;
  cuda_guarded("copy", {&src, &dst}, [&] {
    if (src.dtype() == dst.dtype() && src.is_contiguous() && dst.is_contiguous()) {
      if (src.raw_data() != dst.raw_data())
        MOKD_CUDA_CHECK(cudaMemcpyAsync(dst.raw_data(), src.raw_data(), src.nbytes(),
                                        cudaMemcpyDeviceToDevice, stream()));
      return;
    }
    kernels::StridedDesc d = strided_desc("copy", src.shape(), src.strides(), dst.strides());
    kernels::copy_strided(src.raw_data(), src.dtype(), dst.raw_data(), dst.dtype(), d, src.numel(),
                          stream());
  });
}

void CudaBackend::fill(Tensor& dst, double value) {
  MOKD_CHECK(dst.device().is_cuda() && dst.is_contiguous(),
             "cuda fill: needs a contiguous cuda tensor, got ", dst.str());
  cuda_guarded("fill", {&dst}, [&] {
    kernels::fill(dst.raw_data(), dst.dtype(), value, dst.numel(), stream());
  });
}

void CudaBackend::copy_to_host(void* host_dst, const void* dev_src, size_t nbytes) {
  if (nbytes == 0) return;
  cuda_guarded("copy_to_host", {}, [&] {
    MOKD_CUDA_CHECK(cudaMemcpyAsync(host_dst, dev_src, nbytes, cudaMemcpyDeviceToHost, stream()));
    // The host reads the bytes next: wait for them (and surface any earlier asynchronous error).
    MOKD_CUDA_CHECK(cudaStreamSynchronize(stream()));
  });
}

void CudaBackend::copy_from_host(void* dev_dst, const void* host_src, size_t nbytes) {
  if (nbytes == 0) return;
  cuda_guarded("copy_from_host", {}, [&] {
    std::lock_guard<std::mutex> lock(staging_mu_);
    const char* src = static_cast<const char*>(host_src);
    char* dst = static_cast<char*>(dev_dst);
    for (size_t off = 0; off < nbytes;) {
      const size_t n = std::min(kStagingMaxBytes, nbytes - off);
      StagingSlot& s = staging_[staging_next_];
      staging_next_ = (staging_next_ + 1) % kStagingSlots;
      if (!s.done) MOKD_CUDA_CHECK(cudaEventCreateWithFlags(&s.done, cudaEventDisableTiming));
      else MOKD_CUDA_CHECK(cudaEventSynchronize(s.done));  // the slot's last DMA has finished
      if (s.bytes < n) {
        if (s.buf) MOKD_CUDA_CHECK(cudaFreeHost(s.buf));
        s.buf = nullptr;
        s.bytes = 0;
        if (cudaHostAlloc(&s.buf, n, cudaHostAllocDefault) != cudaSuccess) {
          // No pinned memory to be had (limits, containers): this piece goes the pageable way,
          // synchronously, as uploads did before the ring.
          (void)cudaGetLastError();
          s.buf = nullptr;
          MOKD_CUDA_CHECK(cudaMemcpyAsync(dst + off, src + off, n, cudaMemcpyHostToDevice, stream()));
          MOKD_CUDA_CHECK(cudaStreamSynchronize(stream()));
          off += n;
          continue;
        }
        s.bytes = n;
      }
      // The caller's buffer may be freed as soon as we return: it is copied out now.
      std::memcpy(s.buf, src + off, n);
      MOKD_CUDA_CHECK(cudaMemcpyAsync(dst + off, s.buf, n, cudaMemcpyHostToDevice, stream()));
      MOKD_CUDA_CHECK(cudaEventRecord(s.done, stream()));
      off += n;
    }
  });
}

// ---- random ----

void CudaBackend::fill_uniform(Tensor& dst, float lo, float hi, RngKey key) {
  cuda_expect_f32(dst, "fill_uniform", "dst");
  cuda_guarded("fill_uniform", {&dst},
               [&] { kernels::fill_uniform(mf(dst), dst.numel(), lo, hi, key, stream()); });
}

void CudaBackend::fill_normal(Tensor& dst, float mean, float std, RngKey key) {
  cuda_expect_f32(dst, "fill_normal", "dst");
  cuda_guarded("fill_normal", {&dst},
               [&] { kernels::fill_normal(mf(dst), dst.numel(), mean, std, key, stream()); });
}

void CudaBackend::bernoulli_scaled(Tensor& dst, float keep_prob, RngKey key) {
  cuda_expect_f32(dst, "bernoulli_scaled", "dst");
  cuda_guarded("bernoulli_scaled", {&dst},
               [&] { kernels::bernoulli_scaled(mf(dst), dst.numel(), keep_prob, key, stream()); });
}

// ---- elementwise ----

void CudaBackend::unary(UnaryOp op, const Tensor& x, Tensor& out, float alpha) {
  unary_args(DeviceType::CUDA, op, x, out);
  cuda_guarded(unary_name(op), {&x, &out},
               [&] { kernels::unary(op, cf(x), mf(out), x.numel(), alpha, stream()); });
}

void CudaBackend::unary_backward(UnaryOp op, const Tensor& x, const Tensor& gout, Tensor& gin,
                                 float alpha) {
  unary_backward_args(DeviceType::CUDA, op, x, gout, gin);
  cuda_guarded(unary_name(op), {&x, &gout, &gin}, [&] {
    kernels::unary_backward(op, cf(x), cf(gout), mf(gin), x.numel(), alpha, stream());
  });
}

void CudaBackend::binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
  binary_args(DeviceType::CUDA, a, b, out);
  cuda_guarded("binary", {&a, &b, &out}, [&] {
    bool contiguous = a.is_contiguous() && b.is_contiguous();
    kernels::StridedDesc d;
    if (!contiguous) d = strided_desc("binary", out.shape(), a.strides(), b.strides());
    kernels::binary(op, cf(a), cf(b), mf(out), d, out.numel(), contiguous, stream());
  });
}

// ---- reductions ----

void CudaBackend::reduce_sum(const Tensor& x, Tensor& out, float scale) {
  reduce_sum_args(DeviceType::CUDA, x, out);
  cuda_guarded("reduce_sum", {&x, &out}, [&] {
    const int64_t n = x.numel(), on = out.numel();
    if (on == 0) return;
    if (n == 0) {  // sums over nothing
      kernels::fill(out.raw_data(), DType::F32, 0.0, on, stream());
      return;
    }
    if (on == 1) {
      Tensor part = scratch(kernels::kReducePartials);
      kernels::reduce_all(cf(x), n, mf(out), scale, false, static_cast<double*>(part.raw_data()),
                          stream());
      return;
    }
    if (on == n) {  // nothing reduced (only size-1 dims)
      kernels::unary(UnaryOp::Scale, cf(x), mf(out), n, scale, stream());
      return;
    }
    // Classify: non-trivial dims (size > 1) are kept or reduced. All reduced after all kept:
    // row sums; all reduced before all kept: column sums; anything else: the generic kernel.
    const Shape& xs = x.shape();
    const Shape& os = out.shape();
    bool seen_kept = false, seen_red = false, red_after_kept = false, kept_after_red = false;
    for (int64_t k = 0; k < x.dim(); ++k) {
      if (xs[k] == 1) continue;
      bool kept = os[k] == xs[k];
      if (kept) {
        if (seen_red) kept_after_red = true;
        seen_kept = true;
      } else {
        if (seen_kept) red_after_kept = true;
        seen_red = true;
      }
    }
    if (!kept_after_red) {
      kernels::reduce_rows(cf(x), on, n / on, mf(out), scale, stream());
    } else if (!red_after_kept) {
      Tensor part = scratch(kernels::col_partials_size(n / on, on));
      kernels::reduce_cols(cf(x), n / on, on, mf(out), scale,
                           static_cast<double*>(part.raw_data()), stream());
    } else {
      kernels::StridedDesc d = strided_desc("reduce_sum", xs, x.strides(), x.strides());
      kernels::reduce_generic(cf(x), mf(out), on, d, os.data(), scale, stream());
    }
  });
}

void CudaBackend::argmax_lastdim(const Tensor& x, Tensor& out) {
  const RowDims d = argmax_args(DeviceType::CUDA, x, out);
  cuda_guarded("argmax", {&x, &out}, [&] {
    kernels::argmax_lastdim(cf(x), d.rows, d.cols, static_cast<int64_t*>(out.raw_data()), stream());
  });
}

void CudaBackend::sum_squares_accumulate(const Tensor& x, Tensor& out) {
  sum_squares_args(DeviceType::CUDA, x, out);
  if (x.numel() == 0) return;
  cuda_guarded("sum_squares", {&x, &out}, [&] {
    Tensor part = scratch(kernels::kReducePartials);
    kernels::reduce_all(cf(x), x.numel(), mf(out), 1.f, true,
                        static_cast<double*>(part.raw_data()), stream());
  });
}

// ---- softmax family ----

void CudaBackend::softmax(const Tensor& x, Tensor& y, bool log) {
  const RowDims d = softmax_args(DeviceType::CUDA, x, y, log);
  cuda_guarded(log ? "log_softmax" : "softmax", {&x, &y},
               [&] { kernels::softmax(cf(x), mf(y), d.rows, d.cols, log, stream()); });
}

void CudaBackend::softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) {
  const RowDims d = softmax_backward_args(DeviceType::CUDA, y, gy, gx, log);
  cuda_guarded(log ? "log_softmax_backward" : "softmax_backward", {&y, &gy, &gx}, [&] {
    kernels::softmax_backward(cf(y), cf(gy), mf(gx), d.rows, d.cols, log, stream());
  });
}

void CudaBackend::logsumexp(const Tensor& x, Tensor& out) {
  const RowDims d = logsumexp_args(DeviceType::CUDA, x, out);
  cuda_guarded("logsumexp", {&x, &out},
               [&] { kernels::logsumexp(cf(x), mf(out), d.rows, d.cols, stream()); });
}

// ---- layer norm ----

void CudaBackend::layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y,
                             Tensor& mean, Tensor& rstd) {
  const RowDims dims = layer_norm_args(DeviceType::CUDA, x, w, b, y, mean, rstd);
  const int64_t d = dims.cols, rows = dims.rows;
  cuda_guarded("layer_norm", {&x, w, b, &y}, [&] {
    kernels::layer_norm(cf(x), cf_opt(w), cf_opt(b), eps, mf(y), mf(mean), mf(rstd), rows, d,
                        stream());
  });
}

void CudaBackend::layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* w,
                                      const Tensor& mean, const Tensor& rstd, Tensor& gx,
                                      Tensor* gw, Tensor* gb) {
  const RowDims dims =
      layer_norm_backward_args(DeviceType::CUDA, gy, x, w, mean, rstd, gx, gw, gb);
  const int64_t d = dims.cols, rows = dims.rows;
  cuda_guarded("layer_norm_backward", {&gy, &x, w, &gx}, [&] {
    Tensor part = scratch((gw || gb) ? kernels::layer_norm_partials_size(rows, d) : 1);
    kernels::layer_norm_backward(cf(gy), cf(x), cf_opt(w), cf(mean), cf(rstd), mf(gx), mf_opt(gw),
                                 mf_opt(gb), rows, d, static_cast<double*>(part.raw_data()),
                                 stream());
  });
}

// ---- batch norm ----

void CudaBackend::batch_norm_train(const Tensor& x, const Tensor& w, const Tensor& b,
                                   Tensor& running_mean, Tensor& running_var, float momentum,
                                   float eps, Tensor& y, Tensor& save_mean, Tensor& save_invstd) {
  const BnDims d = batch_norm_train_args(DeviceType::CUDA, x, w, b, running_mean, running_var, y,
                                         save_mean, save_invstd);
  const int64_t rows = d.rows, C = d.C;
  cuda_guarded("batch_norm_train", {&x, &w, &y}, [&] {
    Tensor s = scratch(kernels::batch_norm_scratch_size(rows, C));
    kernels::batch_norm_train(cf(x), cf(w), cf(b), mf(running_mean), mf(running_var), momentum,
                              eps, mf(y), mf(save_mean), mf(save_invstd), rows, C,
                              static_cast<double*>(s.raw_data()), stream());
  });
}

void CudaBackend::batch_norm_eval(const Tensor& x, const Tensor& w, const Tensor& b,
                                  const Tensor& running_mean, const Tensor& running_var, float eps,
                                  Tensor& y) {
  const BnDims d = batch_norm_eval_args(DeviceType::CUDA, x, w, b, running_mean, running_var, y);
  const int64_t rows = d.rows, C = d.C;
  cuda_guarded("batch_norm_eval", {&x, &w, &y}, [&] {
    Tensor s = scratch(C + 1);
    kernels::batch_norm_eval(cf(x), cf(w), cf(b), cf(running_mean), cf(running_var), eps, mf(y),
                             rows, C, static_cast<double*>(s.raw_data()), stream());
  });
}

void CudaBackend::batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                      const Tensor& mean, const Tensor& invstd, bool training,
                                      Tensor& gx, Tensor& gw, Tensor& gb) {
  const BnDims d = batch_norm_backward_args(DeviceType::CUDA, gy, x, w, mean, invstd, gx, gw, gb);
  const int64_t rows = d.rows, C = d.C;
  cuda_guarded("batch_norm_backward", {&gy, &x, &w, &gx}, [&] {
    Tensor s = scratch(kernels::batch_norm_scratch_size(rows, C));
    kernels::batch_norm_backward(cf(gy), cf(x), cf(w), cf(mean), cf(invstd), training, mf(gx),
                                 mf(gw), mf(gb), rows, C, static_cast<double*>(s.raw_data()),
                                 stream());
  });
}

// ---- pooling ----

namespace {
// The pooling kernels' geometry from the shared contract's.
kernels::PoolDims pool_dims(const PoolGeom& g, const Pool2dParams& p) {
  return {g.N, g.H, g.W, g.C, g.Ho, g.Wo, p.kernel_h, p.kernel_w, p.stride_h,
          p.stride_w, p.pad_h, p.pad_w, p.count_include_pad};
}
}  // namespace

void CudaBackend::max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) {
  const kernels::PoolDims g = pool_dims(max_pool2d_args(DeviceType::CUDA, x, p, y, argmax), p);
  cuda_guarded("max_pool2d", {&x, &y}, [&] {
    kernels::max_pool2d(cf(x), mf(y), static_cast<int64_t*>(argmax.raw_data()), g, stream());
  });
}

void CudaBackend::max_pool2d_backward(const Tensor& gy, const Tensor& argmax, Tensor& gx) {
  max_pool2d_backward_args(DeviceType::CUDA, gy, argmax, gx);
  cuda_guarded("max_pool2d_backward", {&gy, &gx}, [&] {
    // Indices outside gx are skipped here (the CPU reference throws for them).
    kernels::max_pool2d_backward(cf(gy), static_cast<const int64_t*>(argmax.raw_data()), mf(gx),
                                 gy.numel(), gx.numel(), stream());
  });
}

void CudaBackend::avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) {
  const kernels::PoolDims g = pool_dims(avg_pool2d_args(DeviceType::CUDA, x, p, y), p);
  cuda_guarded("avg_pool2d", {&x, &y}, [&] { kernels::avg_pool2d(cf(x), mf(y), g, stream()); });
}

void CudaBackend::avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) {
  const kernels::PoolDims g = pool_dims(avg_pool2d_backward_args(DeviceType::CUDA, gy, p, gx), p);
  cuda_guarded("avg_pool2d_backward", {&gy, &gx},
               [&] { kernels::avg_pool2d_backward(cf(gy), mf(gx), g, stream()); });
}

// ---- attention ----

namespace {
// The CUDA kernel's limits, after the shared contract (engine/kernel_args.h).
AttnDims cuda_attn_limits(const char* kernel, const AttnDims& a, const Tensor& q, const Tensor& k,
                          const Tensor& v) {
  MOKD_CHECK(a.d <= kernels::kAttnMaxDim && a.dv <= kernels::kAttnMaxDim, kernel,
             ": the CUDA kernel supports head dims up to ", kernels::kAttnMaxDim, ", got q ",
             q.str(), " and v ", v.str());
  MOKD_CHECK(a.bh < (int64_t(1) << 31) && (std::max(a.nq, a.nk) + 3) / 4 <= 65535, kernel,
             ": too many rows for the CUDA kernel's grid: q ", q.str(), ", k ", k.str());
  return a;
}
}  // namespace

void CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                            Tensor& out, Tensor& lse) {
  const AttnDims a =
      cuda_attn_limits("attention", attention_args(DeviceType::CUDA, q, k, v, out, lse), q, k, v);
  cuda_guarded("attention", {&q, &k, &v}, [&] {
    if (a.nk == 0) {  // softmax over nothing: no output, lse = log(0)
      kernels::fill(out.raw_data(), DType::F32, 0.0, out.numel(), stream());
      kernels::fill(lse.raw_data(), DType::F32, -std::numeric_limits<double>::infinity(),
                    lse.numel(), stream());
      return;
    }
    kernels::attention(cf(q), cf(k), cf(v), scale, mf(out), mf(lse), a.bh, a.nq, a.nk, a.d, a.dv,
                       stream());
  });
}

void CudaBackend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const Tensor& out, const Tensor& lse, const Tensor& gout,
                                     float scale, Tensor& gq, Tensor& gk, Tensor& gv) {
  const AttnDims a = cuda_attn_limits(
      "attention_backward",
      attention_backward_args(DeviceType::CUDA, q, k, v, out, lse, gout, gq, gk, gv), q, k, v);
  cuda_guarded("attention_backward", {&q, &k, &v, &gout}, [&] {
    if (a.nk == 0) {
      kernels::fill(gq.raw_data(), DType::F32, 0.0, gq.numel(), stream());
      return;
    }
    Tensor delta = scratch((a.bh * a.nq + 1) / 2 + 1);  // bh * nq floats
    kernels::attention_backward(cf(q), cf(k), cf(v), cf(out), cf(lse), cf(gout), scale, mf(gq),
                                mf(gk), mf(gv), static_cast<float*>(delta.raw_data()), a.bh, a.nq,
                                a.nk, a.d, a.dv, stream());
  });
}

// ---- losses helpers ----

void CudaBackend::one_hot(const Tensor& labels, Tensor& out, float on, float off) {
  const LossDims d = one_hot_args(DeviceType::CUDA, labels, out);
  const int64_t B = d.B, C = d.C;
  if (B == 0) return;
  Tensor lc = labels.contiguous();
  if (C == 0) {  // no class is valid: the first label is outside [0, 0), as the CPU reports
    int64_t label = 0;
    copy_to_host(&label, lc.raw_data(), sizeof(label));
    MOKD_FAIL("one_hot: label ", label, " at index 0 is outside [0, 0)");
  }
  int64_t bad = B;
  cuda_guarded("one_hot", {&labels, &out}, [&] {
    Tensor flag = Tensor::empty({1}, DType::I64, device());
    kernels::fill(flag.raw_data(), DType::I64, static_cast<double>(B), 1, stream());
    kernels::one_hot(static_cast<const int64_t*>(lc.raw_data()), B, C, on, off, mf(out),
                     static_cast<int64_t*>(flag.raw_data()), stream());
    // One small synchronous read per call: a bad label must throw here, as on the CPU.
    copy_to_host(&bad, flag.raw_data(), sizeof(bad));
  });
  if (bad < B) {
    int64_t label = 0;
    copy_to_host(&label, static_cast<const int64_t*>(lc.raw_data()) + bad, sizeof(label));
    MOKD_FAIL("one_hot: label ", label, " at index ", bad, " is outside [0, ", C, ")");
  }
}

// ---- optimizers ----

void CudaBackend::adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, const AdamHyper& h) {
  const char* k = "adam_update";
  adam_args(DeviceType::CUDA, k, p, g, m, v, h);
  cuda_guarded(k, {&p, &g}, [&] {
    kernels::adam_update(mf(p), cf(g), mf(m), mf(v), p.numel(), h, stream());
  });
}

void CudaBackend::sgd_update(Tensor& p, const Tensor& g, Tensor& buf, const SgdHyper& h) {
  const char* k = "sgd_update";
  sgd_args(DeviceType::CUDA, k, p, g, buf, h);
  const bool use_momentum = h.momentum != 0.f;
  cuda_guarded(k, {&p, &g}, [&] {
    kernels::sgd_update(mf(p), cf(g), use_momentum ? mf(buf) : nullptr, p.numel(), h, stream());
  });
}

}  // namespace mokd
