// Differentiable ops: the engine's public math. Each op checks its inputs (throwing mokd::Error
// that names the op and the shapes), calls kernels through backend_for(...), and records a
// backward function when grad is needed. Implementations live in engine/ops/*.cpp, one file per
// family. Float inputs must be f32 on the CPU.
#pragma once
#include <optional>
#include <vector>

#include "engine/autograd.h"
#include "engine/backend.h"
#include "engine/error.h"
#include "engine/rng.h"
#include "engine/tensor.h"

namespace mokd {

// ---- elementwise (engine/ops/elementwise.cpp); binary ops broadcast numpy-style ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor scale(const Tensor& x, float alpha);       // alpha * x
Tensor add_scalar(const Tensor& x, float alpha);  // x + alpha
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor square(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // exact (erf) form, as timm's nn.GELU
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator*(const Tensor& a, float s) { return scale(a, s); }
inline Tensor operator*(float s, const Tensor& a) { return scale(a, s); }

// ---- reductions (engine/ops/reduce.cpp) ----
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor sum(const Tensor& x);     // all elements -> scalar (shape [])
Tensor mean(const Tensor& x);    // all elements -> scalar
Tensor argmax(const Tensor& x);  // over the last dim, i64, not differentiable

// ---- shape (engine/ops/shape.cpp) ----
Tensor reshape(const Tensor& x, const Shape& shape);  // one -1 allowed; copies only if needed
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);  // result is contiguous
Tensor transpose(const Tensor& x, int64_t d0, int64_t d1);          // result is contiguous
// Inputs may mix f32 and bf16 (an f32 parameter with bf16 activations): the result is bf16.
Tensor concat(const std::vector<Tensor>& xs, int64_t dim);
// x converted to a floating dtype (itself if it already has it); the gradient converts back.
Tensor cast(const Tensor& x, DType dtype);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);  // a contiguous copy
Tensor flatten(const Tensor& x, int64_t start_dim = 1);  // dims [start_dim, end) into one

// ---- linear algebra (engine/ops/matmul.cpp) ----
// [.., M, K] @ [.., K, N]; leading dims equal, or b rank 2 (shared across the batch).
Tensor matmul(const Tensor& a, const Tensor& b);
// x [.., in] @ w[out, in]^T + b[out] (bias may be undefined): torch.nn.Linear.
Tensor linear(const Tensor& x, const Tensor& w, const Tensor& b);

// ---- normalisation and activations (engine/ops/nn.cpp) ----
Tensor softmax(const Tensor& x, int64_t dim = -1);
Tensor log_softmax(const Tensor& x, int64_t dim = -1);
Tensor logsumexp(const Tensor& x, int64_t dim = -1, bool keepdim = false);
// Over the last dim; w and b may be undefined (no affine).
Tensor layer_norm(const Tensor& x, const Tensor& w, const Tensor& b, float eps = 1e-5f);
// Zeroes elements with probability p and scales the rest by 1/(1-p); identity when !training.
Tensor dropout(const Tensor& x, float p, bool training, Generator& gen);
// Stochastic depth: drops whole samples (dim 0) with probability p, scales kept ones by 1/(1-p).
Tensor drop_path(const Tensor& x, float p, bool training, Generator& gen);

// ---- convolution and pooling, NHWC (engine/ops/conv.cpp) ----
// x [N, H, W, C], w [O, kh, kw, C/groups], bias [O] or undefined -> [N, Ho, Wo, O].
Tensor conv2d(const Tensor& x, const Tensor& w, const Tensor& bias, const Conv2dParams& p);
// x [N, H, W, C]. training: batch statistics, running stats updated (momentum as PyTorch).
Tensor batch_norm2d(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean,
                    Tensor& running_var, bool training, float momentum = 0.1f, float eps = 1e-5f);
// relu(batch_norm2d(x) (+ residual)) as one op, for CNN students: the values and gradients of
// the composition bit for bit, but the batch norm's output is not kept for backward (the ReLU's
// mask is read from its output), so a training step holds one activation fewer per use; the
// sum and the ReLU run in place on the batch norm's output.
Tensor batch_norm2d_relu(const Tensor& x, const Tensor& w, const Tensor& b, Tensor& running_mean,
                         Tensor& running_var, bool training, float momentum = 0.1f,
                         float eps = 1e-5f, const Tensor& residual = Tensor());
// relu?(x + bias (+ residual)) in one pass (Backend::bias_act): bias [C] f32 along x's last dim,
// residual of x's shape or undefined. Inference only (a folded frozen teacher's convolution
// epilogue): it has no backward and refuses inputs that need a gradient.
Tensor bias_act(const Tensor& x, const Tensor& bias, const Tensor& residual, bool relu);
// gelu(add(x, bias)) as one op (Backend::bias_gelu; engine/ops/elementwise.cpp): bias [C] along
// x's last dim, of x's dtype or f32. Values and gradients equal the composition's bit for bit
// on the CPU; backward is one pass giving x's gradient and the bias's (its column sums).
Tensor bias_gelu(const Tensor& x, const Tensor& bias);
// gelu(linear(x, w, b)) (engine/ops/matmul.cpp): where the backend fuses epilogues
// (Backend::fuses_epilogues) the product without its bias, then bias_gelu; else the product with
// its bias epilogue, then gelu. A ViT MLP's fc1.
Tensor linear_gelu(const Tensor& x, const Tensor& w, const Tensor& b);
// A pre-norm block's residual add and the layer norm after it (engine/ops/nn.cpp):
// s = x + residual (one dtype and shape), n = layer_norm(s, w, b, eps), both with gradients
// (Backend::add_layer_norm). Equal to add then layer_norm bit for bit on the CPU; its backward
// is one pass giving x's (= residual's) gradient, gs + layer_norm's backward of gn, and w's, b's.
struct AddLayerNorm {
  Tensor s, n;
};
AddLayerNorm add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor& w,
                            const Tensor& b, float eps = 1e-5f);
Tensor max_pool2d(const Tensor& x, const Pool2dParams& p);
Tensor avg_pool2d(const Tensor& x, const Pool2dParams& p);
Tensor global_avg_pool2d(const Tensor& x);  // [N, H, W, C] -> [N, C]

// ---- attention (engine/ops/attention.cpp) ----
// Non-causal softmax(q k^T * scale) v over [B, H, N, D]; any N.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale);
// Multi-head self-attention on a packed projection qkv [B, N, 3 * heads * Dh] (timm's layout:
// q, k, v, then heads, then head dim) -> [B, N, heads * Dh] (heads merged). Equals splitting
// q, k, v into [B, heads, N, Dh], scaled_dot_product_attention and merging, with fewer copies.
Tensor self_attention_packed(const Tensor& qkv, int64_t heads, float scale);

// ---- losses (engine/ops/loss.cpp); each returns a scalar ----
// Mean over the batch of cross-entropy against hard labels (i64 [B]) with label smoothing
// (PyTorch's definition: targets (1-s) one-hot + s/C).
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing = 0.f);
// Soft targets [B, C] (rows summing to 1, e.g. from mixup): mean_b -sum_c q log softmax(x).
Tensor cross_entropy_soft(const Tensor& logits, const Tensor& target_probs);
// T^2 * KL(softmax(teacher/T) || softmax(student/T)), summed over classes, mean over the batch
// ("batchmean"). Gradients flow to the student only.
Tensor kl_div(const Tensor& student_logits, const Tensor& teacher_logits, float temperature);
// Mean over elements of smooth-L1(a - b) (PyTorch's SmoothL1Loss, beta).
Tensor smooth_l1(const Tensor& a, const Tensor& b, float beta = 1.f);
Tensor mse(const Tensor& a, const Tensor& b);  // mean squared error

// ---- input pipeline (engine/ops/image_batch.cpp); not differentiable ----
// The model's input from uint8 images: pixels u8 [N, H, W, C] and table f32 [C, 256] on one device
// -> f32 [N, H, W, C] there, normalised, erased and mixed as engine/image_batch.h describes.
Tensor prepare_images(const Tensor& pixels, const Tensor& table, const ImageBatchParams& p);

// ---- initialisation helpers (not recorded) ----
void uniform_(Tensor& t, float lo, float hi, Generator& gen);
void normal_(Tensor& t, float mean, float std, Generator& gen);

}  // namespace mokd
