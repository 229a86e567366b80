// Building blocks (Linear, LayerNorm, Conv2d, BatchNorm2d, Mlp, Attention, Block, PatchEmbed)
// and their seeded initialisers.
#include "models/layers.h"

#include <algorithm>
#include <cmath>

namespace mokd::nn {

// ---- initialisation ----

void trunc_normal_(Tensor& t, float std, Generator& gen, float lo, float hi) {
  MOKD_CHECK(t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous(),
             "trunc_normal_: needs a contiguous f32 CPU tensor, got ", t.str());
  normal_(t, 0.f, std, gen);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = std::clamp(p[i], lo, hi);
}

void kaiming_normal_fan_out_(Tensor& t, Generator& gen) {
  MOKD_CHECK(t.dim() >= 2, "kaiming_normal_fan_out_: needs rank >= 2, got ", t.str());
  // Engine layouts keep the output channels first and the rest of the receptive field after.
  int64_t fan_out = t.numel() / t.size(-1);  // OHWI: O * kh * kw
  normal_(t, 0.f, std::sqrt(2.f / static_cast<float>(fan_out)), gen);
}

void torch_default_uniform_(Tensor& t, int64_t fan_in, Generator& gen) {
  float b = 1.f / std::sqrt(static_cast<float>(std::max<int64_t>(fan_in, 1)));
  uniform_(t, -b, b, gen);
}

// ---- Linear ----

Linear::Linear(int64_t in, int64_t out, bool has_bias, Generator& gen, LinearInit init)
    : in_features(in), out_features(out) {
  MOKD_CHECK(in > 0 && out > 0, "Linear: in and out features must be positive, got ", in, ", ",
             out);
  Tensor w = Tensor::empty({out, in});
  if (init == LinearInit::TruncNormal02)
    trunc_normal_(w, 0.02f, gen);
  else
    torch_default_uniform_(w, in, gen);
  weight = register_parameter("weight", w);
  if (has_bias) {
    Tensor b = Tensor::zeros({out});
    if (init == LinearInit::TorchDefault) torch_default_uniform_(b, in, gen);
    bias = register_parameter("bias", b);
  }
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight, bias); }

Tensor pooled_head(const Tensor& pooled, float drop_rate, bool training, Generator& gen,
                   const Linear& fc) {
  return fc.forward(drop_rate > 0.f ? dropout(pooled, drop_rate, training, gen) : pooled);
}

// ---- LayerNorm ----

LayerNorm::LayerNorm(int64_t dim, float eps_) : eps(eps_) {
  weight = register_parameter("weight", Tensor::ones({dim}));
  bias = register_parameter("bias", Tensor::zeros({dim}));
}

Tensor LayerNorm::forward(const Tensor& x) const { return layer_norm(x, weight, bias, eps); }

// ---- Conv2d ----

Conv2d::Conv2d(int64_t in, int64_t out, int kernel_, int stride, int pad, bool has_bias,
               Generator& gen, ConvInit init, int groups)
    : in_channels(in), out_channels(out), kernel(kernel_) {
  MOKD_CHECK(
      in > 0 && out > 0 && kernel_ > 0 && groups > 0 && in % groups == 0 && out % groups == 0,
      "Conv2d: bad configuration in ", in, " out ", out, " kernel ", kernel_, " groups ", groups);
  params.stride_h = params.stride_w = stride;
  params.pad_h = params.pad_w = pad;
  params.groups = groups;
  const int64_t fan_in = (in / groups) * kernel_ * kernel_;
  Tensor w = Tensor::empty({out, kernel_, kernel_, in / groups});
  if (init == ConvInit::KaimingFanOut)
    kaiming_normal_fan_out_(w, gen);
  else
    torch_default_uniform_(w, fan_in, gen);
  weight = register_parameter("weight", w);
  if (has_bias) {
    Tensor b = Tensor::zeros({out});
    if (init == ConvInit::TorchDefault) torch_default_uniform_(b, fan_in, gen);
    bias = register_parameter("bias", b);
  }
}

Tensor Conv2d::forward(const Tensor& x) const {
  return conv2d(x, weight, bias.defined() ? bias : folded_bias, params);
}

Tensor Conv2d::forward_bias_act(const Tensor& x, const Tensor* residual, bool relu) const {
  const Tensor& b = bias.defined() ? bias : folded_bias;
  MOKD_CHECK(b.defined(), "Conv2d::forward_bias_act: the convolution has no bias to add");
  MOKD_CHECK(!is_training(), "Conv2d: this convolution holds a folded batch norm (a frozen ",
             "teacher's, model.teacher_fold_bn); it cannot train");
  if (needs_grad({&x, &weight, &b})) {  // the unfused composition, which has a backward
    Tensor y = conv2d(x, weight, b, params);
    if (residual) y = add(y, *residual);
    return relu ? mokd::relu(y) : y;
  }
  return bias_act(conv2d(x, weight, Tensor(), params), b, residual ? *residual : Tensor(), relu);
}

Tensor Conv2d::to_file(const std::string& name, const Tensor& t) const {
  if (name != "weight") return t;
  return t.permute_view({0, 3, 1, 2});  // OHWI -> OIHW
}

Tensor Conv2d::from_file(const std::string& name, const Tensor& t) const {
  if (name != "weight") return t;
  return t.permute_view({0, 2, 3, 1});  // OIHW -> OHWI
}

Shape Conv2d::file_shape(const std::string& name, const Tensor& t) const {
  if (name != "weight") return t.shape();
  const Shape& s = t.shape();
  return {s[0], s[3], s[1], s[2]};
}

// ---- BatchNorm2d ----

BatchNorm2d::BatchNorm2d(int64_t c, float eps_, float momentum_)
    : channels(c), eps(eps_), momentum(momentum_) {
  weight = register_parameter("weight", Tensor::ones({c}));
  bias = register_parameter("bias", Tensor::zeros({c}));
  running_mean = register_buffer("running_mean", Tensor::zeros({c}));
  running_var = register_buffer("running_var", Tensor::ones({c}));
  num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}, DType::I64));
}

Tensor BatchNorm2d::forward(const Tensor& x) {
  if (folded_) {
    MOKD_CHECK(!is_training(), "BatchNorm2d: this batch norm is folded into its convolution (a ",
               "frozen teacher's, model.teacher_fold_bn); it cannot train");
    return x;
  }
  Tensor y = batch_norm2d(x, weight, bias, running_mean, running_var, is_training(), momentum, eps);
  if (is_training()) ++batches_;
  return y;
}

Tensor BatchNorm2d::forward_relu(const Tensor& x, const Tensor* residual) {
  if (folded_) {
    Tensor y = forward(x);  // refuses training
    return relu(residual ? add(y, *residual) : y);
  }
  Tensor y = batch_norm2d_relu(x, weight, bias, running_mean, running_var, is_training(), momentum,
                               eps, residual ? *residual : Tensor());
  if (is_training()) ++batches_;
  return y;
}

Tensor BatchNorm2d::to_file(const std::string& name, const Tensor& t) const {
  MOKD_CHECK(!folded_, "state_dict: a batch norm of this model is folded into its convolution ",
             "(model.teacher_fold_bn), so its convolution weights are not the checkpoint's; save "
             "the model before folding");
  if (name != "num_batches_tracked") return t;
  return Tensor::from_vector_i64({batches_}, {}, t.device());
}

Tensor BatchNorm2d::from_file(const std::string& name, const Tensor& t) const {
  if (name != "num_batches_tracked") return t;
  // The host counter is the source of truth; loading sets it (a logically const hook).
  auto v = t.to_vector_i64();
  const_cast<BatchNorm2d*>(this)->batches_ = v.empty() ? 0 : v[0];
  return t;
}

// PyTorch keeps the module's current counter instead, which is 0 on a freshly built one; 0 here
// makes the loaded state depend on the file alone. The counter feeds no computation (momentum is
// fixed), only the saved state.
Tensor BatchNorm2d::absent_value(const std::string& name, const Tensor& t) const {
  if (name != "num_batches_tracked") return Tensor();
  return Tensor::zeros({}, DType::I64, t.device());
}

// ---- Mlp ----

Mlp::Mlp(int64_t dim, int64_t hidden, Generator& gen) {
  fc1 = &register_module("fc1", std::make_unique<Linear>(dim, hidden, true, gen));
  fc2 = &register_module("fc2", std::make_unique<Linear>(hidden, dim, true, gen));
}

// fc1's bias and the GELU as one pass where the backend fuses them (linear_gelu).
Tensor Mlp::forward(const Tensor& x) const {
  return fc2->forward(linear_gelu(x, fc1->weight, fc1->bias));
}

// ---- Attention ----

Attention::Attention(int64_t dim_, int64_t heads, bool qkv_bias, Generator& gen)
    : dim(dim_), num_heads(heads) {
  MOKD_CHECK(heads > 0 && dim_ % heads == 0, "Attention: dim ", dim_,
             " must be divisible by num_heads ", heads);
  head_dim = dim_ / heads;
  qkv = &register_module("qkv", std::make_unique<Linear>(dim_, 3 * dim_, qkv_bias, gen));
  proj = &register_module("proj", std::make_unique<Linear>(dim_, dim_, true, gen));
}

Tensor Attention::forward(const Tensor& x) const {
  MOKD_CHECK(x.dim() == 3 && x.size(2) == dim, "Attention: x must be [B, N, ", dim, "], got ",
             x.str());
  // qkv [B, N, 3D] (q, k, v, then heads) -> attention per head -> heads merged [B, N, D]
  const float sc = 1.f / std::sqrt(static_cast<float>(head_dim));
  return proj->forward(self_attention_packed(qkv->forward(x), num_heads, sc));
}

// ---- Block ----

Block::Block(int64_t dim, int64_t heads, double mlp_ratio, bool qkv_bias, float dp, Generator& gen)
    : drop_path_rate(dp) {
  norm1 = &register_module("norm1", std::make_unique<LayerNorm>(dim));
  attn = &register_module("attn", std::make_unique<Attention>(dim, heads, qkv_bias, gen));
  norm2 = &register_module("norm2", std::make_unique<LayerNorm>(dim));
  mlp = &register_module("mlp",
                         std::make_unique<Mlp>(dim, static_cast<int64_t>(dim * mlp_ratio), gen));
}

Tensor Block::forward(const Tensor& x, Generator& gen) const {
  auto dp = [&](const Tensor& t) {
    return drop_path_rate > 0.f ? drop_path(t, drop_path_rate, is_training(), gen) : t;
  };
  // The residual add and norm2 in one pass (add_layer_norm), drop-path already on the branch.
  const AddLayerNorm h = add_layer_norm(x, dp(attn->forward(norm1->forward(x))), norm2->weight,
                                        norm2->bias, norm2->eps);
  return add(h.s, dp(mlp->forward(h.n)));
}

// ---- PatchEmbed ----

PatchEmbed::PatchEmbed(int64_t img, int64_t patch, int64_t in, int64_t dim, Generator& gen)
    : img_size(img), patch_size(patch), in_chans(in), embed_dim(dim) {
  MOKD_CHECK(patch > 0 && img % patch == 0, "PatchEmbed: img_size ", img,
             " must be a multiple of patch_size ", patch);
  grid = img / patch;
  num_patches = grid * grid;
  // timm leaves the patch conv at PyTorch's default init.
  proj = &register_module(
      "proj", std::make_unique<Conv2d>(in, dim, static_cast<int>(patch), static_cast<int>(patch), 0,
                                       true, gen, ConvInit::TorchDefault));
}

Tensor PatchEmbed::forward(const Tensor& x) const {
  MOKD_CHECK(
      x.dim() == 4 && x.size(1) == img_size && x.size(2) == img_size && x.size(3) == in_chans,
      "PatchEmbed: input must be [B, ", img_size, ", ", img_size, ", ", in_chans, "] (NHWC), got ",
      x.str());
  Tensor y = proj->forward(x);  // [B, g, g, D]
  return reshape(y, {x.size(0), num_patches, embed_dim});
}

}  // namespace mokd::nn

namespace mokd::nn {

void fold_batch_norm_into(Conv2d& conv, BatchNorm2d& bn) {
  MOKD_CHECK(!conv.is_training() && !bn.is_training(),
             "fold_batch_norm_into: the convolution and its batch norm must be in eval mode");
  MOKD_CHECK(!bn.folded_, "fold_batch_norm_into: this batch norm is folded already");
  MOKD_CHECK(bn.channels == conv.out_channels, "fold_batch_norm_into: the batch norm's ",
             bn.channels, " channels are not the convolution's ", conv.out_channels, " outputs");
  const Device dev = conv.weight.device();
  const int64_t out = conv.out_channels, per = conv.weight.numel() / out;
  // Host values (a load-time transformation: the reads cost nothing per step).
  std::vector<float> w = conv.weight.contiguous().to_vector();
  const std::vector<float> gamma = bn.weight.to_vector(), beta = bn.bias.to_vector(),
                           mean = bn.running_mean.to_vector(), var = bn.running_var.to_vector();
  const std::vector<float> b0 =
      conv.bias.defined() ? conv.bias.to_vector() : std::vector<float>(out, 0.f);
  std::vector<float> b(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o) {
    const size_t oc = static_cast<size_t>(o);
    const double s = static_cast<double>(gamma[oc]) /
                     std::sqrt(static_cast<double>(var[oc]) + static_cast<double>(bn.eps));
    for (int64_t k = 0; k < per; ++k) {
      float& v = w[static_cast<size_t>(o * per + k)];
      v = static_cast<float>(static_cast<double>(v) * s);
    }
    b[oc] = static_cast<float>((static_cast<double>(b0[oc]) - mean[oc]) * s + beta[oc]);
  }
  conv.weight.copy_(Tensor::from_vector(w, conv.weight.shape(), DType::F32, dev));
  const Tensor nb = Tensor::from_vector(b, {out}, DType::F32, dev);
  if (conv.bias.defined())
    conv.bias.copy_(nb);
  else
    conv.folded_bias = nb;
  bn.folded_ = true;
}

}  // namespace mokd::nn
