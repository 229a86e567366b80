#include "mokd/train_step.h"

#include <cmath>
#include <limits>

namespace mokd {

TeacherStep::TeacherStep(Model& model, Optimizer& opt, const TeacherStepConfig& cfg)
    : model_(model), opt_(opt), cfg_(cfg) {}

StepStats TeacherStep::step(const data::Batch& b) {
  const Device dev = model_.device();
  StepStats st;
  st.names = {"task"};
  Tensor logits = model_.forward_train(b.images(dev)).logits;
  Tensor loss = b.soft_targets.defined()
                    ? cross_entropy_soft(logits, b.soft_targets.to(dev))
                    : cross_entropy(logits, b.labels.to(dev), cfg_.label_smoothing);
  float v = loss.item();
  MOKD_CHECK(std::isfinite(v), "the loss is not finite (", v, "); lower optim.lr");
  st.losses = {v};
  st.weights = {1.f};
  st.total = v;
  opt_.zero_grad();
  loss.backward();
  float max_norm = cfg_.grad_clip > 0 ? cfg_.grad_clip : std::numeric_limits<float>::max();
  st.grad_norm = clip_grad_norm(model_.parameters(), max_norm).item();
  MOKD_CHECK(std::isfinite(st.grad_norm),
             "the gradient norm is not finite; the step was not applied");
  opt_.step();
  return st;
}

DistillStep::DistillStep(Distiller& distiller, Model& student, Optimizer& opt)
    : distiller_(distiller), student_(student), opt_(opt) {}

StepStats DistillStep::step(const data::Batch& b) {
  const Device dev = student_.device();
  Tensor soft = b.soft_targets.defined() ? b.soft_targets.to(dev) : Tensor();
  return distiller_.step(opt_, b.images(dev), b.labels.to(dev), soft);
}

}  // namespace mokd
