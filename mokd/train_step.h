// The one step interface of training: the loop (mokd/trainer.cpp) calls TrainStep::step(batch)
// whatever it trains, so a training step is one function to read in either mode.
//
//   TeacherStep  plain cross-entropy on the model being trained (mokd_train teacher)
//   DistillStep  a Distiller's step (mokd/distill.h: every method, FAMO, projector)
//
// A step takes a batch as the loader makes it (on the CPU), moves it to the model's device, and
// does one whole update: forward, objectives, backward, gradient clipping, optimizer step (and,
// distilling, the projector retraction and the FAMO update). A non-finite loss or gradient norm
// throws before the optimizer moves anything. The learning rate is set by the caller (the
// schedule), before the step.
#pragma once
#include "io/loader.h"
#include "io/state.h"
#include "mokd/distill.h"
#include "mokd/optim.h"

namespace mokd {

class TrainStep {
 public:
  virtual ~TrainStep() = default;
  virtual StepStats step(const data::Batch& batch) = 0;
  // The step's own checkpoint state (what it keeps between steps besides the model and the
  // optimizer); see the implementations for the names.
  virtual io::State state() const = 0;
  virtual void load_state(const io::State& s) = 0;
};

struct TeacherStepConfig {
  float label_smoothing = 0.f;  // on hard labels; soft targets (mixup) carry their own
  float grad_clip = 0.f;        // global norm; <= 0 disables
};

// loss = CE(logits, labels) with label smoothing, or soft-target CE under mixup/cutmix. Objective
// "task", weight 1. Keeps no state between steps (state() is empty).
class TeacherStep final : public TrainStep {
 public:
  // The optimizer must hold the model's parameters; both must outlive this.
  TeacherStep(Model& model, Optimizer& opt, const TeacherStepConfig& cfg);
  StepStats step(const data::Batch& batch) override;
  io::State state() const override { return {}; }
  void load_state(const io::State&) override {}

 private:
  Model& model_;
  Optimizer& opt_;
  TeacherStepConfig cfg_;
};

// Distiller::step with the optimizer it was built for; state() is the Distiller's.
class DistillStep final : public TrainStep {
 public:
  // The optimizer must hold the student's parameters and distiller.projector_parameters(); both
  // must outlive this.
  DistillStep(Distiller& distiller, Model& student, Optimizer& opt);
  StepStats step(const data::Batch& batch) override;
  io::State state() const override { return distiller_.state(); }
  void load_state(const io::State& s) override { distiller_.load_state(s); }

 private:
  Distiller& distiller_;
  Model& student_;
  Optimizer& opt_;
};

}  // namespace mokd
