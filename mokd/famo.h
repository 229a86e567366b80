// FAMO (Liu et al., NeurIPS 2023, arXiv 2306.03792): fast adaptive multitask optimisation, as the
// official algorithm (Cranial-XIX/FAMO, famo.py: get_weighted_loss, update) does it.
//
// State: logits w [K] (init 0), softmax weights z = softmax(w), min losses L* (default 0),
// its own Adam on w (lr 0.025, coupled L2 weight decay 0.01, betas 0.9/0.999, eps 1e-8).
// Per step:   loss = weighted_loss(L)        -> backpropagate it into the student
//             (clip, optimizer step, no-grad re-forward on the same batch -> L')
//             update(L, L')                  -> one Adam step on w
// All state stays on the device of the losses; with its checks off (check = false, as the trainer
// runs it) FAMO makes no host read: the caller checks margin() of the losses it reads.
#pragma once
#include <string>
#include <vector>

#include "engine/ops.h"
#include "io/state.h"

namespace mokd {

struct FamoConfig {
  float lr = 0.025f;           // Adam learning rate of w
  float weight_decay = 0.01f;  // coupled L2 (torch.optim.Adam's weight_decay): g += wd * w
  float beta1 = 0.9f, beta2 = 0.999f, adam_eps = 1e-8f;
  float eps = 1e-8f;           // inside log(L - L* + eps)
  bool check_positive = true;  // reject L - L* + eps <= 0 naming the objective (reads values)
};

class Famo {
 public:
  // names: one per objective (used in errors and logs).
  Famo(std::vector<std::string> names, const FamoConfig& cfg = {}, Device dev = Device::cpu());

  int num_objectives() const { return static_cast<int>(names_.size()); }
  const std::vector<std::string>& names() const { return names_; }

  // z = softmax(w), [K] on the device (a fresh tensor, no autograd).
  Tensor weights() const;

  // sum_i (z_i / c) log(L_i - L*_i + eps) with c = sum_j z_j / (L_j - L*_j + eps) a constant:
  // its gradient is sum_i a_i grad L_i with a_i = (z_i / D_i) / c, which sum to 1. w gets no
  // gradient from it. Remembers the detached losses for update().
  // check = false skips the positivity check (a host read): a data-parallel step checks the
  // ranks' mean losses instead, so that every rank stops at the same step.
  Tensor weighted_loss(const std::vector<Tensor>& losses, bool check = true);

  // The weights a_i the last weighted_loss() applied to the raw losses (diagnostics).
  Tensor last_loss_weights() const { return last_a_; }

  // delta_i = log(L_i - L*_i + eps) - log(L'_i - L*_i + eps); grad_w = z * (delta - <z, delta>);
  // one Adam step on w. `after` are the losses of the no-grad re-forward on the same batch.
  void update(const std::vector<Tensor>& after);
  // The same with both sides given as [K] tensors: a step over several micro-batches (gradient
  // accumulation, data-parallel ranks) passes the means of their losses before and after.
  // check = false skips the positivity check of `after` (a host read): the caller checks
  // margin(after) when it reads the step's values.
  void update(const Tensor& before, const Tensor& after, bool check = true);

  // L - L* + eps for losses [K], whose logarithm FAMO takes (it must be finite and > 0); on the
  // device, no host read.
  Tensor margin(const Tensor& losses) const;

  void set_min_losses(const Tensor& min_losses);  // [K]

  // The logits w, live (tests set them to start from non-uniform weights).
  Tensor& logits() { return w_; }

  // Checkpoint state: tensors "w" (logits), "m", "v" (Adam moments), counter "step" (Adam
  // steps). The min losses are configuration, not state. load_state() copies the values into this
  // FAMO's tensors (on its device) and throws naming the entry for a missing one or a wrong shape,
  // leaving this FAMO unchanged.
  io::State state() const;
  void load_state(const io::State& s);

 private:
  Tensor stack_losses(const std::vector<Tensor>& losses, const char* what, bool check = true) const;

  std::vector<std::string> names_;
  FamoConfig cfg_;
  Tensor w_, m_, v_, min_losses_;
  int64_t step_ = 0;
  Tensor prev_;  // detached losses of the last weighted_loss
  Tensor last_a_;
};

}  // namespace mokd
