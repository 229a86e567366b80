// The objects a training run builds from its TrainConfig: device, datasets, models, the frozen
// teacher, the distiller, optimizer, schedule, loader, EMA and the training step. One place, so
// that mokd_train's subcommands, the trainer and the tests build them alike, and so that what a
// run is made of can be read in one function (build_training).
#pragma once
#include <memory>
#include <string>

#include "dist/communicator.h"
#include "io/dataset.h"
#include "io/loader.h"
#include "models/model.h"
#include "mokd/config.h"
#include "mokd/distill.h"
#include "mokd/ema.h"
#include "mokd/grad_sync.h"
#include "mokd/optim.h"
#include "mokd/schedule.h"
#include "mokd/train_step.h"

namespace mokd {

enum class TrainMode { Teacher, Distill };

// The run folder of a config: run.out_dir as given, or when it is "" runs/<subcommand>-<the model
// trained>: runs/teacher-<model.teacher> or runs/distill-<model.student>.
std::string default_out_dir(const TrainConfig& cfg, TrainMode mode);

// The device of a config: "auto" means cuda when a CUDA device is available.
Device resolve_device(const std::string& name);

// run.threads (OpenMP threads, when > 0) and run.precision (matmul precision), process-wide.
void apply_runtime_settings(const TrainConfig& cfg);

// The datasets of a config (train or test split), limited by data.train_limit / eval_limit.
std::unique_ptr<data::Dataset> open_dataset(const TrainConfig& cfg, bool train);

// The train and test splits describe one task, checked before training: both non-empty, at least
// two classes, the same class names in the same order, one image size and channel count. Errors
// name the splits' folders.
void check_splits(const TrainConfig& cfg, const data::Dataset& train, const data::Dataset& test);

// Samples [begin, begin + n) of ds (which must outlive the result): a rank's share of a split.
std::unique_ptr<data::Dataset> dataset_slice(const data::Dataset& ds, int64_t begin, int64_t n);

// The samples of one micro-batch: data.batch_size (the global batch) over world processes and
// optim.accum_steps micro-batches each; throws naming the keys when it does not divide.
int64_t micro_batch_size(const TrainConfig& cfg, int world);

// Loader options for training (augmentation, mixup/cutmix, shuffling, drop_last) or evaluation;
// both normalise with data.mean/std, or the dataset's usual statistics (ImageNet's for
// image_folder).
data::LoaderOptions loader_options(const TrainConfig& cfg, const data::Dataset& ds, bool train,
                                   uint64_t seed);

// Builds a model named `name` for the dataset's image size, channels and classes (drop rates
// from model.* when is_student: the model being trained).
std::unique_ptr<Model> make_model(const std::string& name, const TrainConfig& cfg,
                                  const data::Dataset& ds, uint64_t seed, bool is_student);

// Starts m from the checkpoint `path` given by config key `key` (model.teacher_init or
// model.student_init): a strict load, except that with reset_head the classifier head
// (Model::head_names) keeps its fresh initialisation for the dataset's classes whatever the file
// holds for it. Errors name the key, the file and the model, and list every tensor that does not
// fit (a wrong shape with both shapes, missing and unexpected names); a file whose head is sized
// for another class count adds the hint to set model.reset_head=true.
void load_init(Model& m, const std::string& key, const std::string& path, bool reset_head);

// The distillation settings of a config (distill.*, optim.label_smoothing/grad_clip, run.seed).
DistillConfig make_distill_config(const TrainConfig& cfg);

// optim.optimizer (sgd or adamw) over timm's weight-decay groups of `params`.
std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& cfg, const NamedTensors& params);

// The cosine schedule of optim.lr/min_lr/warmup_lr/warmup_steps over total_steps updates.
std::unique_ptr<CosineSchedule> make_schedule(const TrainConfig& cfg, int64_t total_steps);

// Everything one run trains with, built by build_training in dependency order. Members refer to
// each other (the step to the model and optimizer, the loader to the dataset), so a Training is
// neither copied nor moved after it is built.
struct Training {
  TrainMode mode = TrainMode::Teacher;
  Device device;
  std::unique_ptr<data::Dataset> train_set, test_set;
  std::unique_ptr<Model> model;          // the model being trained (teacher or student)
  std::unique_ptr<Model> teacher;        // Distill: frozen, eval mode
  std::string teacher_sha256;            // Distill: of model.teacher_weights; "" otherwise
  std::unique_ptr<Distiller> distiller;  // Distill
  std::unique_ptr<Optimizer> optimizer;  // the model's parameters (and the projector's)
  std::unique_ptr<CosineSchedule> schedule;
  std::unique_ptr<data::Loader> loader;  // the training split
  std::unique_ptr<Ema> ema;              // when optim.ema_decay > 0
  std::unique_ptr<TrainStep> step;       // TeacherStep or DistillStep
  dist::Communicator* comm = nullptr;    // the job's (a local one when none was given)
  std::unique_ptr<dist::Communicator> own_comm;
  std::unique_ptr<GradSync> sync;                // the step's gradient accumulation and reduction
  int64_t steps_per_epoch = 0, total_steps = 0;  // optimizer steps

  Training() = default;
  Training(const Training&) = delete;
  Training& operator=(const Training&) = delete;
};

// Builds a run from scratch (a checkpoint, if resuming, is loaded into it afterwards). Applies
// the runtime settings. With a communicator of several ranks (or optim.accum_steps > 1) the loader
// gives this rank its micro-batches of every step and the step averages gradients over all of
// them (mokd/grad_sync.h). Throws naming the config key for unusable settings: a missing dataset
// or teacher file, a teacher file that does not fit model.teacher, no batch of data.batch_size, a
// global batch that does not split over the ranks and micro-batches.
std::unique_ptr<Training> build_training(const TrainConfig& cfg, TrainMode mode,
                                         dist::Communicator* comm = nullptr);

}  // namespace mokd
