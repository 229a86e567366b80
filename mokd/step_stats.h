// What one training step reports, and how the host gets it without waiting for the device.
//
// A step leaves its values (losses, total, gradient norm, weights, FAMO's losses after the update
// and its log margins, diagnostics) in one small f32 tensor on the models' device, `pending`, and
// reads nothing back: on a GPU the host queues the next step while this one runs (no host
// synchronisation inside a step; engine/host_sync.h counts them). The trainer reads the pending
// steps of a log window together, with one read (read_steps), every log.log_every steps and
// before every checkpoint, and stops at the first step whose values show a problem, naming it.
#pragma once
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace mokd {

struct StepStats {
  std::vector<std::string> names;  // objective names, e.g. task, kl, feat

  // ---- host values: filled by read() ----
  std::vector<float> losses;  // before the update
  // FAMO only: the losses of the no-grad re-forward after the update, on the same batch (FAMO's
  // second input; empty otherwise).
  std::vector<float> losses_after;
  std::vector<float> weights;  // FAMO z (before its update) or the fixed weights
  float total = 0.f;           // the value that was backpropagated
  float grad_norm = 0.f;       // before clipping
  // Filled on diagnostic steps: for each pair (i, j), i < j, in order (0,1), (0,2), (1,2) ...
  std::vector<float> grad_cosine;      // cos(g_i, g_j): < 0 means conflict
  std::vector<float> grad_norm_ratio;  // ||g_i|| / ||g_j||: dominance
  bool diagnostics = false;
  // FAMO only: L - L* + eps of the losses before and after, whose logarithms FAMO takes.
  std::vector<float> famo_margin_before, famo_margin_after;

  // ---- the same values on the device, until read ----
  // f32 [n] on the models' device: losses (K), total, grad_norm, then the parts `layout` counts,
  // in this order: weights, losses_after, famo margins before, after, diagnostics (cos, ratio per
  // pair). Undefined once read.
  Tensor pending;
  struct Layout {
    int64_t weights = 0, after = 0, margins = 0, diag_pairs = 0;
  } layout;

  bool is_read() const { return !pending.defined(); }
  // One host read of `pending` (nothing when already read).
  void read();
  // After read(): the first problem in the values, in the order the step made them (a non-finite
  // objective, a FAMO margin that is not finite and > 0, a non-finite gradient norm, a non-finite
  // loss after the update); "" when there is none.
  std::string problem() const;
};

// Packs the device values of a step into st.pending (see StepStats::pending for the order);
// optional parts are undefined tensors.
void set_pending(StepStats& st, const Tensor& losses_and_total, const Tensor& grad_norm,
                 const Tensor& weights, const Tensor& losses_after, const Tensor& margin_before,
                 const Tensor& margin_after, const Tensor& diagnostics);

// Reads every pending step of `steps` with one host read (they live on one device).
void read_steps(const std::vector<StepStats*>& steps);

}  // namespace mokd
