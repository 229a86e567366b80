// The seam between differentiable ops (engine/ops) and kernels. Each device has one Backend; op
// code calls backend_for(tensor).kernel(...) and never asks which device it is on. The CPU
// backend (engine/cpu, Eigen + OpenMP) is the readable reference; the CUDA backend
// (engine/cuda + kernels/) must match it and registers itself at start-up.
//
// Conventions for every kernel below:
//  - Outputs are allocated by the caller with the right shape/dtype on the same device.
//  - Inputs are contiguous unless a comment says "any strides".
//  - Float kernels compute in f32 (accumulating in f32 or wider); the CPU backend accepts f32.
//  - "rows" means numel / last dim: row-wise kernels (softmax, layer_norm) work over the last dim.
//  - Optional tensors are passed as pointers, nullptr when absent.
#pragma once
#include <cstdint>
#include <string>

#include "engine/image_batch.h"
#include "engine/kernel_types.h"
#include "engine/tensor.h"

namespace mokd {

// One parameter of a multi-tensor update (handles share storage: updated in place).
// p_bf16, when defined, is p's bf16 copy (engine/weight_copies.h): the update rewrites it with
// the new p rounded to bf16, in the same pass.
struct AdamTensorRef {
  Tensor p, g, m, v;
  AdamHyper h;
  Tensor p_bf16 = Tensor();
};
struct SgdTensorRef {
  Tensor p, g, buf;  // buf may be undefined when h.momentum == 0
  SgdHyper h;
  Tensor p_bf16 = Tensor();
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // ---- checks the kernels make on the device ----
  // With deferred checks on, kernels that validate their input on the device (the label ranges
  // of one_hot and cross_entropy) record the first bad value there instead of reading it back at
  // once (a host synchronisation per call); check_deferred() reads what was recorded since the
  // last call, with one host read, and throws as the kernel would have. The trainer defers them
  // while it trains and checks at every log step. The CPU backend checks on the spot either way
  // (its kernels read the labels anyway), so these defaults do nothing.
  virtual void set_deferred_checks(bool on) { (void)on; }
  virtual void check_deferred() {}

  // ---- memory ----
  // Copy between any strides and dtypes (f32/bf16/i32/i64/f64 conversions), same shape.
  virtual void copy(const Tensor& src, Tensor& dst) = 0;
  virtual void fill(Tensor& dst, double value) = 0;
  // Raw bytes between this device and host memory.
  virtual void copy_to_host(void* host_dst, const void* dev_src, size_t nbytes) = 0;
  virtual void copy_from_host(void* dev_dst, const void* host_src, size_t nbytes) = 0;

  // ---- random ----
  virtual void fill_uniform(Tensor& dst, float lo, float hi, RngKey key) = 0;
  virtual void fill_normal(Tensor& dst, float mean, float std, RngKey key) = 0;
  // dst[i] = (uniform(key, i) < keep_prob) ? 1 / keep_prob : 0
  virtual void bernoulli_scaled(Tensor& dst, float keep_prob, RngKey key) = 0;

  // ---- elementwise ----
  // out = op(x) (alpha: the op's parameter).
  virtual void unary(UnaryOp op, const Tensor& x, Tensor& out, float alpha) = 0;
  // gin = gout * d op(x) / dx.
  virtual void unary_backward(UnaryOp op, const Tensor& x, const Tensor& gout, Tensor& gin,
                              float alpha) = 0;
  // out = a op b; a and b have out's shape with any strides (0 for broadcast dims); out may alias
  // a.
  virtual void binary(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) = 0;

  // ---- reductions ----
  // out has x's rank with size 1 in reduced dims (or equal sizes): out = sum over them, times
  // scale.
  virtual void reduce_sum(const Tensor& x, Tensor& out, float scale) = 0;
  // out (i64, rows) = index of the largest element of each row (first one on ties).
  virtual void argmax_lastdim(const Tensor& x, Tensor& out) = 0;
  // out (f32 scalar) += sum of squares of x: global gradient norms without a host sync.
  virtual void sum_squares_accumulate(const Tensor& x, Tensor& out) = 0;

  // ---- matrix products ----
  // c = alpha * op(a) @ op(b) + beta * c, batched over the leading dim of rank-3 tensors.
  // a: [batch_a, M, K] ([.., K, M] if trans_a), b: [batch_b, K, N] ([.., N, K] if trans_b),
  // c: [batch, M, N]; rank-2 operands are batch 1; batch_a and batch_b are equal or 1 (broadcast).
  // a and b share a dtype; c is f32, or bf16 with bf16 a and b (f32 accumulation, one rounding).
  virtual void gemm(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b,
                    float alpha, float beta) = 0;
  // Linear layers: c [M, N] = a [M, K] @ b^T (b [N, K]) + bias [N] on every row; a, b f32 or
  // bf16 (one dtype), c f32 or (with bf16 a, b) bf16, bias of c's dtype (a bf16 bias, as
  // PyTorch's autocast rounds it): the bias joins the f32 accumulator and a bf16 c is rounded
  // once. This default copies the bias into an f32 c and accumulates the product on top
  // (beta = 1); the CUDA backend adds it in cuBLASLt's epilogue.
  virtual void gemm_bias(const Tensor& a, const Tensor& b, const Tensor& bias, Tensor& c);

  // ---- fused epilogue ----
  // y = act(x + bias (+ residual)), act ReLU or none, bias [C] f32 along x's last dim; x,
  // residual and y contiguous activations of one dtype (f32 or bf16). The sums and the ReLU run
  // in f32 and y is rounded once on store; y may alias x. What follows a frozen teacher's
  // convolution once its batch norm is folded (models/layers.h). This default is the unfused
  // composition (a bias add, a residual add and a ReLU, each a pass, each rounding a bf16
  // result): the oracle of the fused CPU kernel, and the CUDA backend's path while its fused
  // epilogues are off (engine/cuda/cuda_backend.h).
  virtual void bias_act(const Tensor& x, const Tensor& bias, const Tensor* residual, bool relu,
                        Tensor& y);
  // True where this backend runs the fused epilogues below in one pass (the CPU; CUDA while
  // cuda_fused_epilogues()); ops that would otherwise give up a GEMM's bias epilogue ask first.
  virtual bool fuses_epilogues() const { return false; }
  // The ViT MLP's fc1 epilogue: y = gelu(x + bias), the erf GELU, bias [C] f32 along x's last
  // dim, x and y contiguous activations of one dtype. A bf16 x + bias is rounded before the GELU
  // and y on store, as the composition gelu(add(x, bias)) rounds them, so every backend's result
  // equals it. Backward: gx = g * gelu'(x + bias) (of x's dtype) and, when gbias is given (f32
  // [C]), gbias = the column sums of the stored gx. The defaults are that composition (an add and
  // a GELU pass; the GELU's backward and a column reduction), the oracle of the fused kernels.
  virtual void bias_gelu(const Tensor& x, const Tensor& bias, Tensor& y);
  virtual void bias_gelu_backward(const Tensor& g, const Tensor& x, const Tensor& bias, Tensor& gx,
                                  Tensor* gbias);
  // A pre-norm block's residual add and the next layer norm: s = x + residual (one dtype) and
  // n = layer_norm(s) of the stored s (w, b, mean, rstd as layer_norm's). Backward: gx = gs +
  // layer_norm_backward(gn) (gs may be null: s had no gradient), gw, gb as layer_norm's. The
  // defaults are the composition (an add, then layer_norm; layer_norm_backward, then an add).
  virtual void add_layer_norm(const Tensor& x, const Tensor& residual, const Tensor* w,
                              const Tensor* b, float eps, Tensor& s, Tensor& n, Tensor& mean,
                              Tensor& rstd);
  virtual void add_layer_norm_backward(const Tensor& gn, const Tensor* gs, const Tensor& s,
                                       const Tensor* w, const Tensor& mean, const Tensor& rstd,
                                       Tensor& gx, Tensor* gw, Tensor* gb);

  // ---- softmax family, over the last dim ----
  virtual void softmax(const Tensor& x, Tensor& y, bool log) = 0;
  // gx = softmax'(y) gy (log: log-softmax; y is the forward output).
  virtual void softmax_backward(const Tensor& y, const Tensor& gy, Tensor& gx, bool log) = 0;
  virtual void logsumexp(const Tensor& x, Tensor& out) = 0;  // out: [rows]

  // ---- layer norm over the last dim (weight/bias optional) ----
  // mean, rstd: [rows] f32, saved for backward.
  virtual void layer_norm(const Tensor& x, const Tensor* w, const Tensor* b, float eps, Tensor& y,
                          Tensor& mean, Tensor& rstd) = 0;
  virtual void layer_norm_backward(const Tensor& gy, const Tensor& x, const Tensor* w,
                                   const Tensor& mean, const Tensor& rstd, Tensor& gx, Tensor* gw,
                                   Tensor* gb) = 0;

  // ---- convolution, NHWC; weight [O, kh, kw, I/groups] ----
  virtual void conv2d(const Tensor& x, const Tensor& w, const Tensor* bias, const Conv2dParams& p,
                      Tensor& y) = 0;
  virtual void conv2d_backward_data(const Tensor& gy, const Tensor& w, const Conv2dParams& p,
                                    Tensor& gx) = 0;
  virtual void conv2d_backward_weight(const Tensor& gy, const Tensor& x, const Conv2dParams& p,
                                      Tensor& gw) = 0;

  // ---- batch norm over [rows, C] (NHWC flattened), per channel C ----
  // Train: batch statistics (biased var for normalising); running stats updated in place with
  // the unbiased var (PyTorch). save_mean/save_invstd: [C] for backward.
  virtual void batch_norm_train(const Tensor& x, const Tensor& w, const Tensor& b,
                                Tensor& running_mean, Tensor& running_var, float momentum,
                                float eps, Tensor& y, Tensor& save_mean, Tensor& save_invstd) = 0;
  virtual void batch_norm_eval(const Tensor& x, const Tensor& w, const Tensor& b,
                               const Tensor& running_mean, const Tensor& running_var, float eps,
                               Tensor& y) = 0;
  // training: mean/invstd are batch statistics and gradients flow through them;
  // eval: mean/invstd are the running ones (constants).
  virtual void batch_norm_backward(const Tensor& gy, const Tensor& x, const Tensor& w,
                                   const Tensor& mean, const Tensor& invstd, bool training,
                                   Tensor& gx, Tensor& gw, Tensor& gb) = 0;

  // ---- pooling, NHWC ----
  virtual void max_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y, Tensor& argmax) = 0;
  virtual void max_pool2d_backward(const Tensor& gy, const Tensor& argmax, Tensor& gx) = 0;
  virtual void avg_pool2d(const Tensor& x, const Pool2dParams& p, Tensor& y) = 0;
  virtual void avg_pool2d_backward(const Tensor& gy, const Pool2dParams& p, Tensor& gx) = 0;

  // ---- attention: q, k, v, out [B, H, N, D]; lse [B, H, N] (log-sum-exp of scaled scores) ----
  virtual void attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                         Tensor& out, Tensor& lse) = 0;
  virtual void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse, const Tensor& gout,
                                  float scale, Tensor& gq, Tensor& gk, Tensor& gv) = 0;

  // ---- input pipeline (engine/image_batch.h) ----
  // out f32 [N, H, W, C] from pixels u8 [N, H, W, C] and table f32 [C, 256]: out[i] is
  // erased_value(i) (normalised by the table, then sample i's boxes), mixed by p.mix with sample
  // n - 1 - i. p.boxes is host memory.
  virtual void prepare_images(const Tensor& pixels, const Tensor& table, const ImageBatchParams& p,
                              Tensor& out) = 0;

  // ---- losses helpers ----
  // out [B, C] = off everywhere, on at labels[b] (i64 [B]); throws naming a label outside [0, C).
  virtual void one_hot(const Tensor& labels, Tensor& out, float on, float off) = 0;
  // Fused cross-entropy over logits x [B, C] against targets q = (1 - s) t + s / C, where t is
  // one_hot(labels) (labels: i64 [B]) or the soft rows `soft` [B, C]: exactly one is non-null.
  // loss_rows [B] = lse_b sum_c q_bc - sum_c q_bc x_bc (= -sum_c q log_softmax(x));
  // lse [B] = logsumexp of each row, saved for backward. Throws naming a label outside [0, C).
  virtual void cross_entropy(const Tensor& logits, const Tensor* labels, const Tensor* soft,
                             float smoothing, Tensor& loss_rows, Tensor& lse) = 0;
  // With g_b = grad_scale * gloss_rows[b] (gloss_rows: [B], or one element for every row):
  // glogits[b, c] = g_b (sum_c' q_bc' softmax(x)_bc - q_bc); gsoft[b, c] = g_b (1 - s)
  // (lse_b - x_bc). Either output may be nullptr (not needed).
  virtual void cross_entropy_backward(const Tensor& logits, const Tensor* labels,
                                      const Tensor* soft, float smoothing, const Tensor& lse,
                                      const Tensor& gloss_rows, float grad_scale, Tensor* glogits,
                                      Tensor* gsoft) = 0;
  // Distillation KL at temperature T over student, teacher [B, C], with p = softmax(x / T):
  // loss_rows [B] = sum_c p_t (log p_t - log p_s); lse_s, lse_t [B] = logsumexp(x / T) of each
  // row, saved for backward.
  virtual void kl_div(const Tensor& student, const Tensor& teacher, float temperature,
                      Tensor& loss_rows, Tensor& lse_s, Tensor& lse_t) = 0;
  // gstudent[b, c] = g_b / T (p_s - p_t)[b, c], g_b as in cross_entropy_backward.
  virtual void kl_div_backward(const Tensor& student, const Tensor& teacher, float temperature,
                               const Tensor& lse_s, const Tensor& lse_t, const Tensor& gloss_rows,
                               float grad_scale, Tensor& gstudent) = 0;

  // ---- optimizers (in place; f32 params and state) ----
  virtual void adam_update(Tensor& p, const Tensor& g, Tensor& m, Tensor& v,
                           const AdamHyper& h) = 0;
  virtual void sgd_update(Tensor& p, const Tensor& g, Tensor& buf, const SgdHyper& h) = 0;
  // Multi-tensor forms: one call (one or a few launches) updates a whole model. Each entry carries
  // its own hyper-parameters (param groups differ in lr and weight decay, parameters in step), and
  // gets exactly the per-tensor update above (bit-identical). All on this backend's device; the
  // tensors of an entry must not alias another entry's.
  virtual void adam_update_multi(const std::vector<AdamTensorRef>& list) = 0;
  virtual void sgd_update_multi(const std::vector<SgdTensorRef>& list) = 0;
  // out (f32 scalar) += sum over xs of sum_squares_accumulate(x): the global gradient norm.
  virtual void sum_squares_multi(const std::vector<const Tensor*>& xs, Tensor& out) = 0;
  // x *= s[0] for every x (in place), s an f32 scalar read on the device (the clip coefficient):
  // no host sync. Equals binary(Mul, x, s expanded, x) element for element.
  virtual void scale_multi(const std::vector<Tensor*>& xs, const Tensor& s) = 0;
};

// The backend of a device / of the device a tensor lives on.
Backend& backend_for(Device d);
inline Backend& backend_for(const Tensor& t) { return backend_for(t.device()); }
void register_backend(DeviceType t, Backend* b);
bool device_available(Device d);

// The engine computes on one GPU per process. cuda_device_count(): the GPUs this process sees (0
// without a CUDA backend or device). use_cuda_device(i): the CUDA backend computes on GPU i and
// CUDA tensors live on Device::cuda(i); call it before the first CUDA tensor or kernel (a
// data-parallel rank picks its GPU this way). Throws for an index out of range, or once CUDA work
// has started on another GPU.
int cuda_device_count();
void use_cuda_device(int index);
// The physical identity of GPU i (its PCI bus id, e.g. "0000:1B:00.0"): the same GPU seen by two
// processes under other indices (CUDA_VISIBLE_DEVICES) has one identity. "" without CUDA.
std::string cuda_device_identity(int index);
// For the CUDA backend's registration: the device count, the function that switches to one and
// the one that names one.
void register_cuda_devices(int count, void (*select)(int index),
                           std::string (*identity)(int index));

}  // namespace mokd
