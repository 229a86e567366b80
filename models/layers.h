// Building blocks with timm's parameter names: Linear, LayerNorm, Conv2d, BatchNorm2d, Mlp,
// Attention, Block (pre-norm transformer block) and PatchEmbed. Images and feature maps are NHWC.
#pragma once
#include <cstdint>
#include <memory>

#include "models/module.h"

namespace mokd::nn {

// ---- initialisation (host side; modules are built on the CPU and moved with to()) ----
// Normal(0, std) clamped to [lo, hi] (timm's trunc_normal_ defaults: [-2, 2] absolute).
void trunc_normal_(Tensor& t, float std, Generator& gen, float lo = -2.f, float hi = 2.f);
// He normal with fan_out = shape[0] * prod(kernel) (ReLU gain): timm/torchvision ResNet convs.
void kaiming_normal_fan_out_(Tensor& t, Generator& gen);
// PyTorch's default for Linear/Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
void torch_default_uniform_(Tensor& t, int64_t fan_in, Generator& gen);

enum class LinearInit { TruncNormal02, TorchDefault };

// y = x W^T + b; weight [out, in], bias [out].
class Linear : public Module {
 public:
  Linear(int64_t in, int64_t out, bool bias, Generator& gen,
         LinearInit init = LinearInit::TruncNormal02);
  Tensor forward(const Tensor& x) const;
  int64_t in_features, out_features;
  Tensor weight, bias;
};

// The classifier of the pooled CNNs (ResNet, RegNet): dropout at rate drop_rate on the pooled
// feature (training only, masks from gen), then the linear head.
Tensor pooled_head(const Tensor& pooled, float drop_rate, bool training, Generator& gen,
                   const Linear& fc);

// Over the last dim; weight/bias [dim] (ones/zeros).
class LayerNorm : public Module {
 public:
  explicit LayerNorm(int64_t dim, float eps = 1e-6f);
  Tensor forward(const Tensor& x) const;
  float eps;
  Tensor weight, bias;
};

enum class ConvInit { KaimingFanOut, TorchDefault };

// NHWC conv. The engine keeps weight as [O, kh, kw, I/groups] (OHWI); state dicts hold
// timm/PyTorch's [O, I/groups, kh, kw] (OIHW): converted on load and save.
class Conv2d : public Module {
 public:
  Conv2d(int64_t in, int64_t out, int kernel, int stride, int pad, bool bias, Generator& gen,
         ConvInit init = ConvInit::KaimingFanOut, int groups = 1);
  Tensor forward(const Tensor& x) const;
  int64_t in_channels, out_channels;
  int kernel;
  Conv2dParams params;
  Tensor weight, bias;
  // The bias a folded batch norm left (fold_batch_norm_into) on a convolution built without one:
  // not a parameter or a state-dict entry, on the weight's device.
  Tensor folded_bias;
  // After folding, in eval mode: the convolution, then its bias, the residual (if any) and the
  // ReLU (if relu) in one pass (bias_act): relu?(bn(conv(x)) + residual) of the unfolded model.
  Tensor forward_bias_act(const Tensor& x, const Tensor* residual, bool relu) const;

 protected:
  Tensor to_file(const std::string& name, const Tensor& t) const override;
  Tensor from_file(const std::string& name, const Tensor& t) const override;
  Shape file_shape(const std::string& name, const Tensor& t) const override;
};

// Per-channel batch norm over NHWC. Buffers running_mean, running_var and num_batches_tracked
// (i64 scalar, as torch saves it; counted on the host so training never syncs a device). A state
// dict without num_batches_tracked (older torch, some exporters) loads, strict too, with the
// counter at 0.
class BatchNorm2d : public Module {
 public:
  explicit BatchNorm2d(int64_t channels, float eps = 1e-5f, float momentum = 0.1f);
  Tensor forward(const Tensor& x);
  // relu(forward(x) (+ residual)) as one op (batch_norm2d_relu: one activation fewer kept for
  // backward).
  Tensor forward_relu(const Tensor& x, const Tensor* residual = nullptr);
  int64_t channels;
  float eps, momentum;
  Tensor weight, bias, running_mean, running_var, num_batches_tracked;
  int64_t batches_tracked() const { return batches_; }
  // Folded into the convolution before it (fold_batch_norm_into): forward is the identity, and
  // training or saving the module is refused (its convolution's weights hold the normalisation).
  bool folded() const { return folded_; }

 protected:
  Tensor to_file(const std::string& name, const Tensor& t) const override;
  Tensor from_file(const std::string& name, const Tensor& t) const override;
  Tensor absent_value(const std::string& name, const Tensor& t) const override;

 private:
  friend void fold_batch_norm_into(Conv2d& conv, BatchNorm2d& bn);
  int64_t batches_ = 0;
  bool folded_ = false;
};

// Folds an eval-mode batch norm into the convolution whose output it normalises (a frozen
// teacher: eval mode never changes its statistics): with s = weight / sqrt(running_var + eps),
// the convolution's weight becomes w * s per output channel and its bias (b - running_mean) * s
// + bias_bn, computed in double and rounded to f32 once, so bn(conv(x)) becomes one convolution
// with a bias, equal up to f32 rounding. Both modules must be in eval mode on one device.
void fold_batch_norm_into(Conv2d& conv, BatchNorm2d& bn);

// fc1 -> GELU -> fc2 (timm's Mlp with drop 0).
class Mlp : public Module {
 public:
  Mlp(int64_t dim, int64_t hidden, Generator& gen);
  Tensor forward(const Tensor& x) const;
  Linear* fc1;
  Linear* fc2;
};

// Multi-head self-attention: qkv linear, softmax(q k^T / sqrt(Dh)) v, proj.
class Attention : public Module {
 public:
  Attention(int64_t dim, int64_t num_heads, bool qkv_bias, Generator& gen);
  Tensor forward(const Tensor& x) const;  // [B, N, D] -> [B, N, D]
  int64_t dim, num_heads, head_dim;
  Linear* qkv;
  Linear* proj;
};

// Pre-norm transformer block: x + dp(attn(norm1(x))), then x + dp(mlp(norm2(x))).
class Block : public Module {
 public:
  Block(int64_t dim, int64_t num_heads, double mlp_ratio, bool qkv_bias, float drop_path,
        Generator& gen);
  Tensor forward(const Tensor& x, Generator& dropout_gen) const;
  float drop_path_rate;
  LayerNorm* norm1;
  Attention* attn;
  LayerNorm* norm2;
  Mlp* mlp;
};

// Non-overlapping patches: conv with kernel = stride = patch, [B, H, W, C] -> [B, N, D] with the
// patches in row-major (h, w) order, as timm's flatten(2).transpose(1, 2).
class PatchEmbed : public Module {
 public:
  PatchEmbed(int64_t img_size, int64_t patch_size, int64_t in_chans, int64_t embed_dim,
             Generator& gen);
  Tensor forward(const Tensor& x) const;
  int64_t img_size, patch_size, in_chans, embed_dim, grid, num_patches;
  Conv2d* proj;
};

}  // namespace mokd::nn
