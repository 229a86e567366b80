// Optimizers (SGD, AdamW, Adam with L2), parameter groups, and global gradient-norm clipping.
//
// Semantics follow torch.optim: parameters without a .grad are skipped by step() (their state
// and per-parameter step count do not advance); state is created lazily on a parameter's first
// update, on the parameter's device; a step checks every gradient first (a bad one throws before
// any parameter moves), then updates all parameters of a device in one multi-tensor backend call
// (adam_update_multi / sgd_update_multi: a few kernel launches for a whole model), so no update
// loops on the host and nothing synchronises with the device.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace mokd {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

// A set of parameters sharing hyper-parameters. lr is the group's base learning rate: the lr used
// by step() is lr * the optimizer's lr scale (set_lr_scale), or an override set by set_group_lr.
struct ParamGroup {
  std::vector<Tensor> params;
  float lr = 1e-3f;
  float weight_decay = 0.f;
};

// timm's param_groups_weight_decay: parameters of rank <= 1 (norm weights, biases), names
// ending in ".bias" and names listed in no_decay_names (exact match; DeiT's no_weight_decay():
// pos_embed, cls_token, dist_token) go to group 0 with weight_decay 0; the rest to group 1 with
// weight_decay. Parameters that do not require grad are left out. Both groups are always returned
// (possibly empty) and keep the input order.
std::vector<ParamGroup> decay_groups(const NamedTensors& named_params, float lr, float weight_decay,
                                     const std::vector<std::string>& no_decay_names = {
                                         "pos_embed", "cls_token", "dist_token"});

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // One update of every parameter that has a .grad (f32, the parameter's shape and device).
  void step();
  // Drops every parameter's .grad (PyTorch's set_to_none=True).
  void zero_grad();

  // Every group's lr becomes its base lr times scale (what a schedule drives); clears overrides.
  void set_lr_scale(float scale);
  // Overrides one group's current lr (absolute), until the next set_lr_scale.
  void set_group_lr(size_t group, float lr);
  float current_lr(size_t group) const;
  float lr_scale() const { return lr_scale_; }

  const std::vector<ParamGroup>& groups() const { return groups_; }
  int64_t step_count() const { return steps_; }  // calls of step()
  const char* name() const { return name_; }

  // Every state tensor with a stable name, for checkpoints:
  //   "<name>.steps"                  i64 scalar on the CPU: calls of step()
  //   "<name>.step.<group>.<index>"   i64 scalar on the CPU: updates this parameter has had
  //   "<name>.<slot>.<group>.<index>" f32, the parameter's shape and device (slots: m, v for
  //                                   adam/adamw; momentum_buffer for sgd with momentum)
  // Only parameters updated at least once have entries (state is lazy, as in PyTorch). The
  // tensors are the live state (not copies): write them out before the next step().
  NamedTensors state() const;
  // Restores what state() listed (copies values into this optimizer's parameters' devices).
  // Throws naming the entry for an unknown name, a wrong shape, or a missing companion entry.
  void load_state(const std::map<std::string, Tensor>& state);

 protected:
  Optimizer(const char* name, std::vector<ParamGroup> groups);

  struct ParamState {
    int64_t step = 0;           // updates applied to this parameter
    std::vector<Tensor> slots;  // per slot_names(), created on the first update
  };
  // One parameter to update: p, its grad g (contiguous), its state (step already incremented).
  struct Pending {
    Tensor p, g;
    ParamState* st;
    float lr, weight_decay;
  };
  // Applies the updates of one step, every parameter on device `dev`, in one backend call.
  virtual void update(const std::vector<Pending>& list, Device dev) = 0;
  virtual std::vector<std::string> slot_names() const = 0;

  std::vector<ParamGroup> groups_;
  std::vector<std::vector<ParamState>> state_;  // [group][index]
  std::vector<float> lr_;                       // current lr of each group
  float lr_scale_ = 1.f;
  int64_t steps_ = 0;
  const char* name_;
};

struct AdamOptions {
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
};

// torch.optim.AdamW: decoupled weight decay (p *= 1 - lr wd), then Adam with bias correction.
class AdamW : public Optimizer {
 public:
  explicit AdamW(std::vector<ParamGroup> groups, const AdamOptions& opt = {});
  const AdamOptions& options() const { return opt_; }

 protected:
  AdamW(const char* name, std::vector<ParamGroup> groups, const AdamOptions& opt, bool decoupled);
  void update(const std::vector<Pending>& list, Device dev) override;
  std::vector<std::string> slot_names() const override { return {"m", "v"}; }

 private:
  AdamOptions opt_;
  bool decoupled_;
};

// torch.optim.Adam with weight_decay: coupled L2 (g += wd p before the moments); FAMO's optimizer.
class Adam : public AdamW {
 public:
  explicit Adam(std::vector<ParamGroup> groups, const AdamOptions& opt = {});
};

struct SgdOptions {
  float momentum = 0.f;
  float dampening = 0.f;
  bool nesterov = false;  // needs momentum > 0 and dampening 0 (as PyTorch)
};

// torch.optim.SGD: coupled weight decay, momentum buffer starting as the first gradient.
class SGD : public Optimizer {
 public:
  explicit SGD(std::vector<ParamGroup> groups, const SgdOptions& opt = {});
  const SgdOptions& options() const { return opt_; }

 protected:
  void update(const std::vector<Pending>& list, Device dev) override;
  std::vector<std::string> slot_names() const override;

 private:
  SgdOptions opt_;
};

// torch.nn.utils.clip_grad_norm_: the global L2 norm of all gradients (parameters without a
// .grad are skipped), and every gradient scaled in place by min(1, max_norm / (norm + 1e-6)).
// Everything stays on the device (no host synchronisation): the norm is returned as an f32 scalar
// tensor on the gradients' device; .item() it for logging. All gradients must be f32 on one device.
//
// Non-finite norms are not detected here (that would need a host sync): the CALLER checks the
// returned norm and skips the step when it is not finite. What the gradients become then: a NaN
// norm gives a clip factor of 1 (fmin ignores NaN), so they are left as they are; an infinite
// norm gives a factor of 0, so finite entries become 0 and infinite ones NaN (as in PyTorch).
// Squares are summed in f32 per device scalar, so a norm above ~1.8e19 also reads as infinite.
// With no gradient at all the norm is 0 (on the first parameter's device, or the CPU).
Tensor clip_grad_norm(const std::vector<Tensor>& params, float max_norm);

}  // namespace mokd
