// The training loop of mokd_train: teacher training (cross-entropy) and distillation (any
// method of mokd/distill.h), with evaluation, EMA, checkpoints, resume, metrics and progress.
//
// Files under run.out_dir:
//   config.toml                      the resolved configuration
//   metrics.jsonl, metrics.csv       one row per logged step and per evaluation
//   checkpoints/last.safetensors     the trained model's weights (timm names), every checkpoint
//   checkpoints/best.safetensors     the weights with the best test top-1 so far
//   checkpoints/state.safetensors    everything --resume needs (weights, optimizer moments,
//                                    FAMO logits and Adam state, projector, EMA, schedule and data
//                                    position, RNG counters, config hash, teacher SHA-256)
// Every file is written to a temporary name and renamed, so a run that stops for any reason
// leaves the previous checkpoint intact.
#pragma once
#include <memory>
#include <string>

#include "io/dataset.h"
#include "models/model.h"
#include "mokd/config.h"
#include "mokd/distill.h"

namespace mokd {

enum class TrainMode { Teacher, Distill };

struct EvalResult {
  double top1 = 0, top5 = 0, loss = 0;
  int64_t count = 0;
};

struct TrainSummary {
  EvalResult final_eval, best_eval;
  int64_t steps = 0;
  double seconds = 0;
  std::string best_weights;  // path
  bool stopped = false;      // run.stop_after ended this invocation early
};

// Runs a whole training (or resumes one when cfg.run.resume). Prints progress to stdout.
TrainSummary train(const TrainConfig& cfg, TrainMode mode);

// SIGINT/SIGTERM (Ctrl-C, a cluster's preemption notice) make a running train() finish its
// current step, write a checkpoint and return with stopped = true, instead of dying mid-step.
// A second signal while that happens ends the process as usual.
void install_stop_handlers();
// What the handlers do; also for tests.
void request_stop();

// Top-1/top-5/cross-entropy of a model on a dataset (no augmentation).
EvalResult evaluate(Model& model, const data::Dataset& ds, const TrainConfig& cfg, Device dev);

// The datasets of a config (train or test split), limited by data.train_limit / eval_limit.
std::unique_ptr<data::Dataset> open_dataset(const TrainConfig& cfg, bool train);

// The distillation settings of a config (distill.*, optim.label_smoothing/grad_clip, run.seed).
DistillConfig make_distill_config(const TrainConfig& cfg);

// The device of a config: "auto" means cuda when a CUDA device is available.
Device resolve_device(const std::string& name);

// Builds a model named `name` for the dataset's image size, channels and classes.
std::unique_ptr<Model> make_model(const std::string& name, const TrainConfig& cfg,
                                  const data::Dataset& ds, uint64_t seed, bool is_student);

}  // namespace mokd
