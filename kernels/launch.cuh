// Host-side declarations of the kernel launchers in kernels/*.cu, except the fused losses
// (kernels/loss.cuh). Plain C++: the CUDA backend's .cpp files include it. Each launcher takes raw
// device pointers and sizes, queues its kernels on `stream` and checks the launch
// (mokd::CudaError naming the kernel). Shapes, dtypes and contiguity are checked by the caller
// (engine/cuda/*.cpp, through engine/kernel_args.h). Device code sees only the plain-data types of
// engine/kernel_types.h and engine/bf16.h, never engine/tensor.h.
//
// Activation kernels are templates over the storage type T of their activations, float or bf16
// (mixed precision), explicitly instantiated for both in their .cu file: values widen to f32 on
// load, the f32 math is the same for both, and each result rounds once on store (engine/bf16.h
// load_f32, store_as). Parameters and per-row/per-channel statistics stay float.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/bf16.h"
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

// ---- random.cu (T: float or bf16; the value is drawn in f32 and stored once) ----
template <class T>
void fill_uniform(T* dst, int64_t n, float lo, float hi, RngKey key, cudaStream_t stream);
template <class T>
void fill_normal(T* dst, int64_t n, float mean, float std, RngKey key, cudaStream_t stream);
template <class T>
void bernoulli_scaled(T* dst, int64_t n, float keep_prob, RngKey key, cudaStream_t stream);

// ---- elementwise.cu (T: float or bf16) ----
template <class T>
void unary(UnaryOp op, const T* x, T* out, int64_t n, float alpha, cudaStream_t stream);
template <class T>
void unary_backward(UnaryOp op, const T* x, const T* gout, T* gin, int64_t n, float alpha,
                    cudaStream_t stream);
// out (contiguous, shape d.shape) = a op b with a, b at strides d.sa, d.sb. (TA, TB): (float,
// float), (bf16, bf16) or (bf16, float) (a bf16 activation with an f32 parameter or mask).
template <class TA, class TB>
void binary(BinaryOp op, const TA* a, const TB* b, TA* out, const StridedDesc& d, int64_t n,
            bool contiguous, cudaStream_t stream);
// y[r, c] += bias[c]
void add_bias_lastdim(float* y, const float* bias, int64_t rows, int64_t c, cudaStream_t stream);
// y = relu?(x + bias[i % c] (+ residual)), f32 math, one rounding on store (T: float or bf16).
template <class T>
void bias_act(const T* x, const float* bias, const T* residual, bool relu, T* y, int64_t n,
              int64_t c, cudaStream_t stream);

// ---- reduce.cu ----
// The sums take x of TX (float or bf16) and write out of TO (float, or TX): the accumulation in
// double is the same for every pair, the result rounds to f32 and then, for a bf16 out, once more
// to bf16 on its store. Instantiated for (float, float), (bf16, bf16) and (bf16, float).
constexpr int kReducePartials = 1024;  // doubles of scratch reduce_all needs
// out[0] = scale * sum(x) (or, accumulate_squares: out[0] += sum(x^2); f32 only).
// partials: kReducePartials.
template <class TX, class TO>
void reduce_all(const TX* x, int64_t n, TO* out, float scale, bool accumulate_squares,
                double* partials, cudaStream_t stream);
// out[r] = scale * sum_i x[r, i] for x [rows, inner].
template <class TX, class TO>
void reduce_rows(const TX* x, int64_t rows, int64_t inner, TO* out, float scale,
                 cudaStream_t stream);
// out[c] = scale * sum_r x[r, c] for x [rows, cols]; partials: col_partials_size(rows, cols).
int64_t col_partials_size(int64_t rows, int64_t cols);
template <class TX, class TO>
void reduce_cols(const TX* x, int64_t rows, int64_t cols, TO* out, float scale, double* partials,
                 cudaStream_t stream);
// Any pattern: d.shape is x's shape, d.sa x's strides, d.sb out's strides with 0 in reduced dims;
// out has on elements (contiguous). One thread per output element.
template <class TX, class TO>
void reduce_generic(const TX* x, TO* out, int64_t on, const StridedDesc& d,
                    const int64_t* out_shape, float scale, cudaStream_t stream);
// out[i] = scale * x[i] with a conversion (nothing reduced, x and out of different dtypes).
template <class TX, class TO>
void scale_convert(const TX* x, TO* out, int64_t n, float scale, cudaStream_t stream);
void argmax_lastdim(const float* x, int64_t rows, int64_t c, int64_t* out, cudaStream_t stream);
// bad (one i64, preset to B by the caller) receives the smallest index of a label outside [0, C).
void one_hot(const int64_t* labels, int64_t B, int64_t C, float on, float off, float* out,
             int64_t* bad, cudaStream_t stream);

// ---- softmax.cu (softmax and its backward: T float or bf16; logsumexp f32) ----
template <class T>
void softmax(const T* x, T* y, int64_t rows, int64_t c, bool log, cudaStream_t stream);
template <class T>
void softmax_backward(const T* y, const T* gy, T* gx, int64_t rows, int64_t c, bool log,
                      cudaStream_t stream);
void logsumexp(const float* x, float* out, int64_t rows, int64_t c, cudaStream_t stream);

// ---- layer_norm.cu (x, y, gy, gx of T, float or bf16; the rest float; w, b, gw, gb may be
// null) ----
template <class T>
void layer_norm(const T* x, const float* w, const float* b, float eps, T* y, float* mean,
                float* rstd, int64_t rows, int64_t d, cudaStream_t stream);
template <class T>
void layer_norm_backward(const T* gy, const T* x, const float* w, const float* mean,
                         const float* rstd, T* gx, float* gw, float* gb, int64_t rows, int64_t d,
                         double* partials, cudaStream_t stream);
// doubles of scratch layer_norm_backward needs for gw and gb
int64_t layer_norm_partials_size(int64_t rows, int64_t d);

// ---- add_layer_norm.cu: s = x + residual, n = layer_norm(s) (T float or bf16; w, b, gw, gb may
// be null; gs may be null: gx = layer_norm_backward(gn) alone) ----
template <class T>
void add_layer_norm(const T* x, const T* residual, const float* w, const float* b, float eps, T* s,
                    T* n, float* mean, float* rstd, int64_t rows, int64_t d, cudaStream_t stream);
template <class T>
void add_layer_norm_backward(const T* gn, const T* gs, const T* s, const float* w,
                             const float* mean, const float* rstd, T* gx, float* gw, float* gb,
                             int64_t rows, int64_t d, double* partials, cudaStream_t stream);
// doubles of scratch add_layer_norm_backward needs for gw and gb
int64_t add_layer_norm_partials_size(int64_t rows, int64_t d);

// ---- bias_gelu.cu: y = gelu(x + bias[c]) over [rows, c] (T float or bf16); backward gx and, when
// gbias is not null, its column sums ----
template <class T>
void bias_gelu(const T* x, const float* bias, T* y, int64_t rows, int64_t c, cudaStream_t stream);
template <class T>
void bias_gelu_backward(const T* g, const T* x, const float* bias, T* gx, float* gbias,
                        int64_t rows, int64_t c, double* partials, cudaStream_t stream);
// doubles of scratch bias_gelu_backward needs for gbias
int64_t bias_gelu_partials_size(int64_t rows, int64_t c);

// ---- batch_norm.cu: x [rows, C]; x, y, gy, gx of T (float or bf16), per-channel tensors float
// ----
int64_t batch_norm_scratch_size(int64_t rows, int64_t C);  // doubles
template <class T>
void batch_norm_train(const T* x, const float* w, const float* b, float* running_mean,
                      float* running_var, float momentum, float eps, T* y, float* save_mean,
                      float* save_invstd, int64_t rows, int64_t C, double* scratch,
                      cudaStream_t stream);
template <class T>
void batch_norm_eval(const T* x, const float* w, const float* b, const float* running_mean,
                     const float* running_var, float eps, T* y, int64_t rows, int64_t C,
                     double* scratch, cudaStream_t stream);
template <class T>
void batch_norm_backward(const T* gy, const T* x, const float* w, const float* mean,
                         const float* invstd, bool training, T* gx, float* gw, float* gb,
                         int64_t rows, int64_t C, double* scratch, cudaStream_t stream);

// ---- pool.cu: NHWC; x, y, gy, gx of T (float or bf16) ----
struct PoolDims {
  int64_t N, H, W, C, Ho, Wo;
  int kh, kw, sh, sw, ph, pw;
  bool count_include_pad;
};
template <class T>
void max_pool2d(const T* x, T* y, int64_t* argmax, const PoolDims& g, cudaStream_t stream);
// gx (numel nx) = scatter-add of gy (numel ny) at argmax (indices outside [0, nx) are skipped).
// A bf16 gx is summed in f32 first, in acc (nx floats of scratch; null for float), so that each
// element rounds once.
template <class T>
void max_pool2d_backward(const T* gy, const int64_t* argmax, T* gx, int64_t ny, int64_t nx,
                         float* acc, cudaStream_t stream);
template <class T>
void avg_pool2d(const T* x, T* y, const PoolDims& g, cudaStream_t stream);
template <class T>
void avg_pool2d_backward(const T* gy, T* gx, const PoolDims& g, cudaStream_t stream);

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
// p16: the param's bf16 copy, rewritten with the updated values (null: none kept).
struct AdamMultiEntry {
  float* p;
  const float* g;
  float* m;
  float* v;
  bf16* p16;
  int64_t n;
  AdamHyper h;
};
struct SgdMultiEntry {
  float* p;
  const float* g;
  float* buf;  // null without momentum
  bf16* p16;   // null: no bf16 copy kept
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
