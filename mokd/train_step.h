// The one step interface of training: the loop (mokd/trainer.cpp) calls TrainStep::step(batch)
// whatever it trains, so a training step is one function to read in either mode.
//
//   TeacherStep  plain cross-entropy on the model being trained (mokd_train teacher)
//   DistillStep  a Distiller's step (mokd/distill.h: every method, FAMO, projector)
//
// A step takes this process's micro-batches as the loader makes them (on the CPU; one unless
// optim.accum_steps > 1), moves them to the model's device, and does one whole update, the
// gradients averaged over every micro-batch of the step on every process (mokd/grad_sync.h):
// forward, objectives, backward, gradient clipping, optimizer step (and, distilling, the projector
// retraction and the FAMO update). A step reads nothing back from the device: its values stay
// pending in the StepStats it returns (mokd/step_stats.h), and the caller reads them and checks
// them (StepStats::problem) when it logs. The learning rate is set by the caller (the schedule),
// before the step.
#pragma once
#include "io/loader.h"
#include "io/state.h"
#include "mokd/distill.h"
#include "mokd/optim.h"

namespace mokd {

// What one step trains on.
struct StepInput {
  std::vector<const data::Batch*> micro;  // this process's micro-batches, in order
  std::vector<int64_t> dropout_counters;  // one per micro-batch (MicroBatch), or empty
};

class TrainStep {
 public:
  virtual ~TrainStep() = default;
  virtual StepStats step(const StepInput& in) = 0;
  // One batch, one process.
  StepStats step(const data::Batch& batch) {
    StepInput in;
    in.micro = {&batch};
    return step(in);
  }
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
  // The optimizer must hold the model's parameters; both (and sync, when given) must outlive this.
  TeacherStep(Model& model, Optimizer& opt, const TeacherStepConfig& cfg, GradSync* sync = nullptr);
  using TrainStep::step;
  StepStats step(const StepInput& in) override;
  io::State state() const override { return {}; }
  void load_state(const io::State&) override {}

 private:
  Model& model_;
  Optimizer& opt_;
  TeacherStepConfig cfg_;
  GradSync* sync_;
};

// Distiller::step with the optimizer it was built for; state() is the Distiller's.
class DistillStep final : public TrainStep {
 public:
  // The optimizer must hold the student's parameters and distiller.projector_parameters(); both
  // must outlive this.
  DistillStep(Distiller& distiller, Model& student, Optimizer& opt, GradSync* sync = nullptr);
  using TrainStep::step;
  StepStats step(const StepInput& in) override;
  io::State state() const override { return distiller_.state(); }
  void load_state(const io::State& s) override { distiller_.load_state(s); }

 private:
  Distiller& distiller_;
  Model& student_;
  Optimizer& opt_;
  GradSync* sync_;
};

}  // namespace mokd
