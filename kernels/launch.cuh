// Host-side declarations of the kernel launchers in kernels/*.cu, except the fused losses
// (kernels/loss.cuh). Plain C++: the CUDA backend's .cpp files include it. Each launcher takes raw
// device pointers and sizes, queues its kernels on `stream` and checks the launch
// (mokd::CudaError naming the kernel). Shapes, dtypes and contiguity are checked by the caller
// (engine/cuda/*.cpp, through engine/kernel_args.h). Device code sees only the plain-data types of
// engine/kernel_types.h, never engine/tensor.h.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/image_batch.h"
#include "engine/kernel_types.h"

namespace mokd::kernels {

constexpr int kMaxDims = 8;

// A shape and the element strides of up to two operands over it.
struct StridedDesc {
  int rank = 0;
  int64_t shape[kMaxDims] = {};
  int64_t sa[kMaxDims] = {};
  int64_t sb[kMaxDims] = {};
};

// ---- copy_fill.cu ----
void copy_strided(const void* src, DType st, void* dst, DType dt, const StridedDesc& d, int64_t n,
                  cudaStream_t stream);  // sa: src strides, sb: dst strides
void fill(void* dst, DType t, double value, int64_t n, cudaStream_t stream);

// ---- image_batch.cu ----
// out f32 [n, h, w, c] from pixels u8 (engine/image_batch.h); boxes grouped by sample,
// first_box[n + 1] where each sample's begin (all device pointers).
void prepare_images(const uint8_t* pixels, const float* table, const EraseBox* boxes,
                    const int32_t* first_box, int64_t n, int64_t h, int64_t w, int64_t c,
                    const MixSpec& mix, float* out, cudaStream_t stream);

// ---- random.cu ----
void fill_uniform(float* dst, int64_t n, float lo, float hi, RngKey key, cudaStream_t stream);
void fill_normal(float* dst, int64_t n, float mean, float std, RngKey key, cudaStream_t stream);
void bernoulli_scaled(float* dst, int64_t n, float keep_prob, RngKey key, cudaStream_t stream);

// ---- elementwise.cu ----
void unary(UnaryOp op, const float* x, float* out, int64_t n, float alpha, cudaStream_t stream);
void unary_backward(UnaryOp op, const float* x, const float* gout, float* gin, int64_t n,
                    float alpha, cudaStream_t stream);
// out (contiguous, shape d.shape) = a op b with a, b at strides d.sa, d.sb.
void binary(BinaryOp op, const float* a, const float* b, float* out, const StridedDesc& d,
            int64_t n, bool contiguous, cudaStream_t stream);
// y[r, c] += bias[c]
void add_bias_lastdim(float* y, const float* bias, int64_t rows, int64_t c, cudaStream_t stream);

// ---- reduce.cu ----
constexpr int kReducePartials = 1024;  // doubles of scratch reduce_all needs
// out[0] = scale * sum(x) (or, accumulate_squares: out[0] += sum(x^2)). partials: kReducePartials.
void reduce_all(const float* x, int64_t n, float* out, float scale, bool accumulate_squares,
                double* partials, cudaStream_t stream);
// out[r] = scale * sum_i x[r, i] for x [rows, inner].
void reduce_rows(const float* x, int64_t rows, int64_t inner, float* out, float scale,
                 cudaStream_t stream);
// out[c] = scale * sum_r x[r, c] for x [rows, cols]; partials: col_partials_size(rows, cols).
int64_t col_partials_size(int64_t rows, int64_t cols);
void reduce_cols(const float* x, int64_t rows, int64_t cols, float* out, float scale,
                 double* partials, cudaStream_t stream);
// Any pattern: d.shape is x's shape, d.sa x's strides, d.sb out's strides with 0 in reduced dims;
// out has on elements (contiguous). One thread per output element.
void reduce_generic(const float* x, float* out, int64_t on, const StridedDesc& d,
                    const int64_t* out_shape, float scale, cudaStream_t stream);
void argmax_lastdim(const float* x, int64_t rows, int64_t c, int64_t* out, cudaStream_t stream);
// bad (one i64, preset to B by the caller) receives the smallest index of a label outside [0, C).
void one_hot(const int64_t* labels, int64_t B, int64_t C, float on, float off, float* out,
             int64_t* bad, cudaStream_t stream);

// ---- softmax.cu ----
void softmax(const float* x, float* y, int64_t rows, int64_t c, bool log, cudaStream_t stream);
void softmax_backward(const float* y, const float* gy, float* gx, int64_t rows, int64_t c, bool log,
                      cudaStream_t stream);
void logsumexp(const float* x, float* out, int64_t rows, int64_t c, cudaStream_t stream);

// ---- layer_norm.cu (w, b, gw, gb may be null) ----
void layer_norm(const float* x, const float* w, const float* b, float eps, float* y, float* mean,
                float* rstd, int64_t rows, int64_t d, cudaStream_t stream);
void layer_norm_backward(const float* gy, const float* x, const float* w, const float* mean,
                         const float* rstd, float* gx, float* gw, float* gb, int64_t rows,
                         int64_t d, double* partials, cudaStream_t stream);
// doubles of scratch layer_norm_backward needs for gw and gb
int64_t layer_norm_partials_size(int64_t rows, int64_t d);

// ---- batch_norm.cu: x [rows, C] ----
int64_t batch_norm_scratch_size(int64_t rows, int64_t C);  // doubles
void batch_norm_train(const float* x, const float* w, const float* b, float* running_mean,
                      float* running_var, float momentum, float eps, float* y, float* save_mean,
                      float* save_invstd, int64_t rows, int64_t C, double* scratch,
                      cudaStream_t stream);
void batch_norm_eval(const float* x, const float* w, const float* b, const float* running_mean,
                     const float* running_var, float eps, float* y, int64_t rows, int64_t C,
                     double* scratch, cudaStream_t stream);
void batch_norm_backward(const float* gy, const float* x, const float* w, const float* mean,
                         const float* invstd, bool training, float* gx, float* gw, float* gb,
                         int64_t rows, int64_t C, double* scratch, cudaStream_t stream);

// ---- pool.cu: NHWC ----
struct PoolDims {
  int64_t N, H, W, C, Ho, Wo;
  int kh, kw, sh, sw, ph, pw;
  bool count_include_pad;
};
void max_pool2d(const float* x, float* y, int64_t* argmax, const PoolDims& g, cudaStream_t stream);
// gx (numel nx) = scatter-add of gy (numel ny) at argmax (indices outside [0, nx) are skipped).
void max_pool2d_backward(const float* gy, const int64_t* argmax, float* gx, int64_t ny, int64_t nx,
                         cudaStream_t stream);
void avg_pool2d(const float* x, float* y, const PoolDims& g, cudaStream_t stream);
void avg_pool2d_backward(const float* gy, float* gx, const PoolDims& g, cudaStream_t stream);

// ---- attention.cu: q [BH, Nq, D], k [BH, Nk, D], v [BH, Nk, Dv]; D, Dv <= kAttnMaxDim ----
constexpr int kAttnMaxDim = 128;
void attention(const float* q, const float* k, const float* v, float scale, float* out, float* lse,
               int64_t bh, int64_t nq, int64_t nk, int64_t d, int64_t dv, cudaStream_t stream);
// delta: scratch of bh * nq floats.
void attention_backward(const float* q, const float* k, const float* v, const float* out,
                        const float* lse, const float* gout, float scale, float* gq, float* gk,
                        float* gv, float* delta, int64_t bh, int64_t nq, int64_t nk, int64_t d,
                        int64_t dv, cudaStream_t stream);

// ---- optim.cu ----
void adam_update(float* p, const float* g, float* m, float* v, int64_t n, const AdamHyper& h,
                 cudaStream_t stream);
void sgd_update(float* p, const float* g, float* buf, int64_t n, const SgdHyper& h,
                cudaStream_t stream);
// Multi-tensor forms: a few launches for the whole list (entries with n == 0 are skipped); each
// element gets the per-tensor update. Entries must not alias one another.
struct AdamMultiEntry {
  float* p;
  const float* g;
  float* m;
  float* v;
  int64_t n;
  AdamHyper h;
};
struct SgdMultiEntry {
  float* p;
  const float* g;
  float* buf;  // null without momentum
  int64_t n;
  SgdHyper h;
};
void adam_update_multi(const AdamMultiEntry* list, size_t count, cudaStream_t stream);
void sgd_update_multi(const SgdMultiEntry* list, size_t count, cudaStream_t stream);
// out[0] += sum over the xs of sum(x^2) (accumulated in double, rounded once);
// partials: sum_squares_multi_partials(ns, count) doubles of scratch.
int64_t sum_squares_multi_partials(const int64_t* ns, size_t count);
void sum_squares_multi(const float* const* xs, const int64_t* ns, size_t count, float* out,
                       double* partials, cudaStream_t stream);
// xs[e][i] *= scale[0] (scale: one f32 in device memory).
void scale_multi(float* const* xs, const int64_t* ns, size_t count, const float* scale,
                 cudaStream_t stream);

}  // namespace mokd::kernels
