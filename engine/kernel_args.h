// The shape contracts of backend kernels, checked the same way by every backend (engine/cpu,
// engine/cuda): operand preconditions and the sizes a kernel derives from its operands. Errors
// name the kernel, the argument and the shapes; a backend adds its own limits after these.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/bf16.h"
#include "engine/error.h"

namespace mokd {

// t is defined, f32, on a device of type `on` and contiguous.
void expect_f32(const Tensor& t, DeviceType on, const char* kernel, const char* arg);
// Operands of a kernel that takes f32 or bf16 (mixed precision): each defined, contiguous, on a
// device of type `on`, all of one float dtype, which is returned. Errors name every operand.
DType expect_float_operands(const char* kernel, DeviceType on,
                            std::initializer_list<std::pair<const Tensor*, const char*>> ts);
// An activation operand (engine/precision.h): defined, contiguous, on a device of type `on`, and
// f32 or bf16, or, with `like`, of like's dtype. Kernels that take activations store them in
// either dtype and compute in f32: each value is widened on load and rounded (to nearest even)
// once on store, the same on every backend.
void expect_activation(const Tensor& t, DeviceType on, const char* kernel, const char* arg,
                       const Tensor* like = nullptr);
// Runs f(T{}) with T the storage type of an activation dtype (float for f32, bf16 for bf16): how
// both backends pick a kernel body's (or a launcher's) template; bodies load with load_f32 and
// store with store_as<T> (engine/bf16.h).
template <class F>
void with_activation_type(DType dt, F&& f) {
  if (dt == DType::BF16)
    f(bf16{});
  else
    f(float{});
}
// t is defined, on a device of type `on` and contiguous (any dtype).
void expect_on(const Tensor& t, DeviceType on, const char* kernel, const char* arg);

// Rows of a row-wise kernel over the last dim: cols = the last dim, rows = numel / cols.
struct RowDims {
  int64_t rows, cols;
};

// Elementwise: activations of one dtype on `on` (binary's b may also be f32 with a bf16 a: a
// parameter or a mask), contiguous (binary's a and b: any strides), and of one element count
// (binary: a and b already expanded to out's shape).
void unary_args(DeviceType on, UnaryOp op, const Tensor& x, const Tensor& out);
void unary_backward_args(DeviceType on, UnaryOp op, const Tensor& x, const Tensor& gout,
                         const Tensor& gin);
void binary_args(DeviceType on, const Tensor& a, const Tensor& b, const Tensor& out);
// bias_act: x, y (and residual) activations of one dtype and shape, whose last dim is the length
// of bias, an f32 vector; all on a device of type `on`.
void bias_act_args(DeviceType on, const Tensor& x, const Tensor& bias, const Tensor* residual,
                   const Tensor& y);
// bias_gelu: x, y (g, gx) activations of one dtype and shape whose last dim is the length of
// bias, an f32 vector; gbias (optional) f32 of bias's length; all on a device of type `on`.
RowDims bias_gelu_args(DeviceType on, const Tensor& x, const Tensor& bias, const Tensor& y);
RowDims bias_gelu_backward_args(DeviceType on, const Tensor& g, const Tensor& x, const Tensor& bias,
                                const Tensor& gx, const Tensor* gbias);

// Reductions: reduce_sum's out has x's rank, each dim x's or 1, and is f32 or of x's dtype; argmax
// takes a non-empty last dim and writes one i64 per row; sum_squares accumulates into a one-element
// f32 out.
void reduce_sum_args(DeviceType on, const Tensor& x, const Tensor& out);
RowDims argmax_args(DeviceType on, const Tensor& x, const Tensor& out);
void sum_squares_args(DeviceType on, const Tensor& x, const Tensor& out);

// Softmax family over the last dim (a rank-0 x is one row of one). The kernel name ("softmax",
// "log_softmax", ...) follows `log`.
RowDims softmax_args(DeviceType on, const Tensor& x, const Tensor& y, bool log);
RowDims softmax_backward_args(DeviceType on, const Tensor& y, const Tensor& gy, const Tensor& gx,
                              bool log);
RowDims logsumexp_args(DeviceType on, const Tensor& x, const Tensor& out);

// gemm: an operand [rows, cols] is a batch of one; [batch, rows, cols] otherwise.
struct GemmDims {
  int64_t batch, rows, cols;
};
GemmDims gemm_dims(const Tensor& t);

struct GemmShape {
  GemmDims a, b, c;
  int64_t M, N, K;  // c_i [M, N] = op(a_i) [M, K] op(b_i) [K, N]
};
// Ranks 2 or 3, equal inner dims, c [.., M, N], batches of a and b equal or 1 and c's their
// maximum (gemm_args adds the dtype and device checks).
GemmShape gemm_shape(const Tensor& a, const Tensor& b, const Tensor& c, bool trans_a, bool trans_b);
// The whole gemm contract: a, b, c on `on`, contiguous, f32 or bf16; a and b of one dtype, c f32
// unless they are bf16; shapes as gemm_shape.
GemmShape gemm_args(DeviceType on, const Tensor& a, const Tensor& b, const Tensor& c, bool trans_a,
                    bool trans_b);

// conv2d: sizes of one convolution, from x [N, H, W, C], w [O, kh, kw, C/groups] and y [N, Ho,
// Wo, O] (NHWC activations, OHWI weights).
struct ConvGeom {
  int64_t N, H, W, C, O, kh, kw, Cg, Og, Ho, Wo, G;
  int sh, sw, ph, pw;
  int64_t K() const { return kh * kw * Cg; }  // columns of the im2col matrix
  int64_t P() const { return Ho * Wo; }       // output pixels per image
  // A 1x1, stride-1, unpadded conv reads x directly: no im2col copy needed.
  bool pointwise() const { return kh == 1 && kw == 1 && sh == 1 && sw == 1 && ph == 0 && pw == 0; }
};
ConvGeom conv_geom(const char* kernel, const Shape& xs, const Shape& ws, const Shape& ys,
                   const Conv2dParams& p);
// The geometry of one convolution kernel call, noted (engine/kernel_costs.h): "conv2d" with x, w,
// y (and the bias); backward_data with gx as x and gy as y; otherwise backward_weight, with gw as
// w and gy as y.
ConvGeom conv_args(const char* kernel, const Tensor& x, const Tensor& w, const Tensor& y,
                   const Conv2dParams& p, const Tensor* bias, bool backward_data);

// Pooling: x [N, H, W, C] and y [N, Ho, Wo, C] with Ho = (H + 2 pad - k) / stride + 1 (floor).
struct PoolGeom {
  int64_t N, H, W, C, Ho, Wo;
};
PoolGeom pool_geom(const char* kernel, const Shape& xs, const Shape& ys, const Pool2dParams& p);
// The pooling kernels: x, y (gx, gy) activations of one dtype on `on`, contiguous; max pooling's
// argmax contiguous i64 shaped like y. Index values are the backend's to check.
PoolGeom max_pool2d_args(DeviceType on, const Tensor& x, const Pool2dParams& p, const Tensor& y,
                         const Tensor& argmax);
void max_pool2d_backward_args(DeviceType on, const Tensor& gy, const Tensor& argmax,
                              const Tensor& gx);
PoolGeom avg_pool2d_args(DeviceType on, const Tensor& x, const Pool2dParams& p, const Tensor& y);
PoolGeom avg_pool2d_backward_args(DeviceType on, const Tensor& gy, const Pool2dParams& p,
                                  const Tensor& gx);

// Layer norm over the last dim d: x, y (gy, gx) activations of one dtype and shape, rank >= 1; mean
// and rstd f32 with one element per row; the optional weight, bias and their gradients f32 with d
// elements.
RowDims layer_norm_args(DeviceType on, const Tensor& x, const Tensor* w, const Tensor* b,
                        const Tensor& y, const Tensor& mean, const Tensor& rstd);
RowDims layer_norm_backward_args(DeviceType on, const Tensor& gy, const Tensor& x, const Tensor* w,
                                 const Tensor& mean, const Tensor& rstd, const Tensor& gx,
                                 const Tensor* gw, const Tensor* gb);
// add_layer_norm: x, residual, s, n (gn, gs, gx) activations of one dtype and shape, the rest
// as layer_norm's (s the normalised input).
RowDims add_layer_norm_args(DeviceType on, const Tensor& x, const Tensor& residual, const Tensor* w,
                            const Tensor* b, const Tensor& s, const Tensor& n, const Tensor& mean,
                            const Tensor& rstd);
RowDims add_layer_norm_backward_args(DeviceType on, const Tensor& gn, const Tensor* gs,
                                     const Tensor& s, const Tensor* w, const Tensor& mean,
                                     const Tensor& rstd, const Tensor& gx, const Tensor* gw,
                                     const Tensor* gb);

// Batch norm over x viewed as [rows, C] (C = last dim): x, y (gy, gx) activations of one shape,
// every per-channel tensor f32 with C elements; training needs more than one row.
struct BnDims {
  int64_t rows, C;
};
BnDims batch_norm_train_args(DeviceType on, const Tensor& x, const Tensor& w, const Tensor& b,
                             const Tensor& running_mean, const Tensor& running_var, const Tensor& y,
                             const Tensor& save_mean, const Tensor& save_invstd);
BnDims batch_norm_eval_args(DeviceType on, const Tensor& x, const Tensor& w, const Tensor& b,
                            const Tensor& running_mean, const Tensor& running_var, const Tensor& y);
BnDims batch_norm_backward_args(DeviceType on, const Tensor& gy, const Tensor& x, const Tensor& w,
                                const Tensor& mean, const Tensor& invstd, const Tensor& gx,
                                const Tensor& gw, const Tensor& gb);

// Attention: q [B, H, Nq, D], k [B, H, Nk, D], v [B, H, Nk, Dv], out [B, H, Nq, Dv],
// lse [B, H, Nq], all f32 on `on`.
struct AttnDims {
  int64_t bh, nq, nk, d, dv;
};
AttnDims attention_args(DeviceType on, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& out, const Tensor& lse);
// The forward's operands, plus the gradients: gout like out, gq, gk, gv like q, k, v.
AttnDims attention_backward_args(DeviceType on, const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& out, const Tensor& lse, const Tensor& gout,
                                 const Tensor& gq, const Tensor& gk, const Tensor& gv);

// Fused losses (cross_entropy, kl_div and their backwards): logits [B, C] f32; targets exactly
// one of labels (i64 [B]) and soft targets ([B, C]); per-row outputs [B]; an incoming per-row
// gradient has B elements or one (read for every row). Label values are the backend's to check.
struct LossDims {
  int64_t B, C;
};
// one_hot: labels i64 [B] (any strides) on `on`, out f32 [B, C]. Label values are the backend's
// to check.
LossDims one_hot_args(DeviceType on, const Tensor& labels, const Tensor& out);
LossDims ce_args(DeviceType on, const Tensor& logits, const Tensor* labels, const Tensor* soft,
                 float smoothing, const Tensor& loss_rows, const Tensor& lse);
LossDims ce_backward_args(DeviceType on, const Tensor& logits, const Tensor* labels,
                          const Tensor* soft, float smoothing, const Tensor& lse,
                          const Tensor& gloss_rows, const Tensor* glogits, const Tensor* gsoft);
LossDims kl_args(DeviceType on, const Tensor& student, const Tensor& teacher, float temperature,
                 const Tensor& loss_rows, const Tensor& lse_s, const Tensor& lse_t);
LossDims kl_backward_args(DeviceType on, const Tensor& student, const Tensor& teacher,
                          float temperature, const Tensor& lse_s, const Tensor& lse_t,
                          const Tensor& gloss_rows, const Tensor& gstudent);

// prepare_images: pixels u8 [N, H, W, C] and out f32 of that shape, table f32 [C, 256], all on
// `on` and contiguous; C <= kEraseMaxChannels when boxes are given; each box inside its image,
// boxes grouped by sample in increasing order; a cutmix box inside the image. Returns where each
// sample's boxes begin (N + 1 offsets into p.boxes).
struct ImageBatchDims {
  int64_t n, h, w, c;
  std::vector<int32_t> first_box;
};
ImageBatchDims prepare_images_args(DeviceType on, const Tensor& pixels, const Tensor& table,
                                   const ImageBatchParams& p, const Tensor& out);

// Optimizer updates: every state tensor f32 on `on`, contiguous, with the param's element count;
// Adam's step 1-based; SGD's momentum buffer only when momentum != 0 (else it may be undefined).
// `kernel` names the call (e.g. "adam_update_multi entry 3"). A defined p_bf16 (the param's bf16
// copy, rewritten by the update) is bf16 on `on`, contiguous, with the param's element count.
void adam_args(DeviceType on, const std::string& kernel, const Tensor& p, const Tensor& g,
               const Tensor& m, const Tensor& v, const AdamHyper& h,
               const Tensor& p_bf16 = Tensor());
void sgd_args(DeviceType on, const std::string& kernel, const Tensor& p, const Tensor& g,
              const Tensor& buf, const SgdHyper& h, const Tensor& p_bf16 = Tensor());
// "kernel entry i": how a multi-tensor kernel names one entry of its list in errors.
std::string entry_name(const char* kernel, size_t i);

}  // namespace mokd
