// Model: the common interface of every classifier (ViT/DeiT, ResNet), so that training and
// distillation code treat them alike.
#pragma once
#include <set>
#include <string>

#include "models/module.h"

namespace mokd {

// What forward_features returns. Undefined tensors where a model has no such thing.
struct Features {
  Tensor cls;           // [B, D] class token after the final norm (ViT)
  Tensor dist;          // [B, D] distillation token after the final norm (distilled ViT)
  Tensor patch_tokens;  // [B, N, D] patch tokens after the final norm (ViT)
  Tensor pooled;        // [B, D] the pooled feature: ViT mean of patch tokens, ResNet global pool
};

// One forward pass with everything training needs.
struct ModelOutput {
  Features features;
  Tensor logits;       // [B, classes] class head
  Tensor dist_logits;  // [B, classes] distillation head (undefined without one)
};

class Model : public nn::Module {
 public:
  // Images are NHWC [B, H, W, C]. Logits in eval-mode semantics of timm: a distilled model
  // averages its two heads.
  virtual Tensor forward(const Tensor& x) = 0;
  virtual Features forward_features(const Tensor& x) = 0;
  // Features and both heads' logits from one pass (for training).
  virtual ModelOutput forward_train(const Tensor& x) = 0;
  virtual int64_t feature_dim() const = 0;  // size of Features::pooled
  virtual int64_t num_classes() const = 0;
  virtual int64_t img_size() const = 0;
  virtual int64_t in_chans() const = 0;
  virtual bool has_dist_head() const { return false; }
  // State-dict names of the classifier head(s), the tensors sized by num_classes() (timm's
  // names); what fine-tuning on another label set leaves fresh.
  virtual std::set<std::string> head_names() const = 0;
  // A frozen teacher's speed-up: folds every batch norm into the convolution before it
  // (nn::fold_batch_norm_into; eval mode, up to f32 rounding) and returns how many it folded.
  // The model can no longer train or be saved. Models without batch norm fold none.
  virtual int64_t fold_batch_norm() { return 0; }
  // The timm model this corresponds to (for export checks), e.g. "deit_tiny_patch16_224".
  const std::string& name() const { return name_; }
  void set_name(const std::string& n) { name_ = n; }
  // Drop-path / dropout masks (Stream::Dropout of the model's seed); its counter is part of a
  // training checkpoint.
  Generator& dropout_generator() { return dropout_gen_; }

 protected:
  explicit Model(uint64_t seed) : dropout_gen_(seed, Stream::Dropout) {}

 private:
  std::string name_;
  Generator dropout_gen_;
};

}  // namespace mokd
