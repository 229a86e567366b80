// One distillation step, for every method (none, kd, deit-hard, vkd, mokd; docs/method.md,
// "Objectives"), as a library function: the trainer runs it through DistillStep
// (mokd/train_step.h) and the tests drive it directly. Works on whichever device the models live
// on. Use (the same code is the test DistillerExample.HeaderUsageCompilesAndSteps in
// tests/test_state.cpp):
//
//   Distiller d(student, teacher, cfg);                // builds the projector (and FAMO)
//   nn::NamedTensors params = student.named_parameters();
//   for (auto& p : d.projector_parameters()) params.push_back(p);
//   AdamW opt(decay_groups(params, 1e-3f, 0.05f));     // the optimizer holds both
//   StepStats s = d.step(opt, images, labels);         // one full step; soft targets optional
//
// A MoKD step (docs/method.md, "Objectives" and "FAMO update"):
//   1. teacher forward under NoGrad (eval mode): teacher logits t, teacher feature z_t
//   2. student forward (train mode): class logits, distillation logits, student feature z_s
//   3. objectives: task = CE(cls, y) (label smoothing, or soft targets under mixup),
//      kl = T^2 KL(softmax(t/T) || softmax(s_dist/T)) (batchmean),
//      feat = smooth_l1(P z_s, layer_norm(z_t)) (stiefel) or the bilinear loss
//      K = 3: [task, kl, feat]; K = 2: [task, kl + feat]
//   4. weighting: famo (weighted_loss), fixed, or exact2 (K = 2 only); backward
//   5. clip the student's gradient to global norm `grad_clip`, optimizer step, projector retract
//   6. famo: student re-forward under NoGrad on the same batch, reusing the teacher's outputs;
//      famo.update(losses after)
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "models/model.h"
#include "mokd/famo.h"
#include "mokd/grad_sync.h"
#include "mokd/optim.h"
#include "mokd/projector.h"
#include "mokd/step_stats.h"

namespace mokd {

enum class Method { None, KD, DeitHard, VKD, MoKD };
enum class Weighting { Famo, Fixed, Exact2 };
enum class FeatureSource { Auto, MeanPatch, Cls, Dist, Pooled };
enum class ProjectorKind { Stiefel, Bilinear };

Method parse_method(const std::string& s);                 // none, kd, deit-hard, vkd, mokd
Weighting parse_weighting(const std::string& s);           // famo, fixed, exact2
FeatureSource parse_feature_source(const std::string& s);  // auto, mean_patch, cls, dist, pooled
ProjectorKind parse_projector(const std::string& s);       // stiefel, bilinear
const char* method_name(Method m);

struct DistillConfig {
  Method method = Method::MoKD;
  int num_objectives = 3;  // MoKD: 3 = [task, kl, feat]; 2 = [task, kl + feat]
  Weighting weighting = Weighting::Famo;
  std::vector<float> fixed_weights;  // Weighting::Fixed: one per objective (default: all 1)
  float label_smoothing = 0.1f;
  float temperature = 1.0f;
  float kd_alpha = 0.5f;  // Method::KD: (1 - alpha) CE + alpha T^2 KL
  ProjectorKind projector = ProjectorKind::Stiefel;
  int64_t bilinear_rank = 0;                            // 0: min(d_s, d_t)
  FeatureSource student_feature = FeatureSource::Auto;  // Auto = Pooled (ViT: mean patch tokens)
  FeatureSource teacher_feature = FeatureSource::Auto;
  float feat_beta = 1.0f;  // smooth-L1 beta
  float grad_clip = 1.0f;  // global norm; <= 0 disables
  FamoConfig famo;
  int diagnostics_every = 0;  // per-objective gradient cosines and norm ratios; 0 = off
  uint64_t seed = 0;          // projector initialisation (Stream::Init)
};

// One micro-batch of a step, on the models' device.
struct MicroBatch {
  Tensor images;        // [B, H, W, C] f32
  Tensor labels;        // i64 [B]
  Tensor soft_targets;  // [B, classes] (mixup/cutmix) or undefined
  // >= 0: the student's Stream::Dropout counter is set to this before its forward (and to this +
  // kReforwardOffset before FAMO's re-forward), so drop-path masks are a function of the
  // micro-batch, not of which process ran it or what ran before. < 0: the generator runs on.
  int64_t dropout_counter = -1;
};
// Dropout counters of a micro-batch's FAMO re-forward: past any forward's draws.
constexpr int64_t kReforwardOffset = int64_t(1) << 35;
// The dropout counter of micro-batch `seq` (numbered over the whole run): 2^36 values each; the
// masks repeat after 2^27 micro-batches (134 M).
inline int64_t dropout_counter_for(int64_t seq) { return (seq & ((int64_t(1) << 27) - 1)) << 36; }

class Distiller {
 public:
  // The teacher is frozen (eval mode, no grad); the optimizer must hold the student's parameters
  // and projector_parameters().
  Distiller(Model& student, Model& teacher, const DistillConfig& cfg);

  // Parameters of the projector (empty when the method has no feature objective).
  nn::NamedTensors projector_parameters() const;

  // images [B, H, W, C] f32 on the models' device; labels i64 [B]; soft_targets [B, classes]
  // (mixup/cutmix) or undefined. Returns the step's values read (StepStats::read) and throws
  // naming the first problem in them (a non-finite objective or gradient norm; the update has
  // been applied by then).
  StepStats step(Optimizer& opt, const Tensor& images, const Tensor& labels,
                 const Tensor& soft_targets = Tensor());
  // One update from this process's micro-batches of the step (gradient accumulation and
  // data-parallel ranks, mokd/grad_sync.h): each micro-batch's objectives and backward, the
  // gradients and the logged values averaged over all micro-batches of the step by `sync`, then
  // clipping, the optimizer, the retraction and FAMO's update on the mean losses before and after.
  // sync == nullptr: one micro-batch, one process. Reads nothing back from the device (except
  // under weighting exact2, whose weights are computed on the host): the values stay pending in
  // the returned StepStats (mokd/step_stats.h), and the caller reads and checks them.
  StepStats step(Optimizer& opt, const std::vector<MicroBatch>& micro, GradSync* sync);

  const DistillConfig& config() const { return cfg_; }
  Famo* famo() { return famo_.get(); }
  std::vector<std::string> objective_names() const;
  int64_t steps() const { return steps_; }  // calls of step()

  // Checkpoint state: the projector's tensors as "projector.<name>", FAMO's as "famo.<name>" with
  // counter "famo_step" (when the method has them), and counter "distill_steps" (calls of step(),
  // which time the diagnostics). load_state() restores them from a state holding these names
  // (other entries are ignored) and throws naming a missing or misshapen entry.
  io::State state() const;
  void load_state(const io::State& s);

 private:
  struct TeacherOut {
    Tensor logits, feature;
  };
  TeacherOut teacher_forward(const Tensor& images);
  // The objectives of the configured method, on the student's outputs.
  std::vector<Tensor> objectives(const ModelOutput& s, const TeacherOut& t, const Tensor& labels,
                                 const Tensor& soft_targets);
  Tensor select_feature(const Features& f, FeatureSource src, const char* who) const;
  // Weighting::Exact2's gradients on one micro-batch; returns the detached total.
  Tensor exact2_backward(const std::vector<Tensor>& L, const std::vector<Tensor>& params,
                         StepStats& st);
  std::vector<Tensor> trainable() const;  // student + projector parameters

  Model& student_;
  Model& teacher_;
  DistillConfig cfg_;
  std::unique_ptr<StiefelProjector> stiefel_;
  std::unique_ptr<BilinearProjector> bilinear_;
  std::unique_ptr<Famo> famo_;
  int64_t steps_ = 0;
};

}  // namespace mokd
