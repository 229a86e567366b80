#include "mokd/train_step.h"

#include <limits>

namespace mokd {

TeacherStep::TeacherStep(Model& model, Optimizer& opt, const TeacherStepConfig& cfg, GradSync* sync)
    : model_(model), opt_(opt), cfg_(cfg), sync_(sync) {}

namespace {

void check_input(const StepInput& in, const GradSync* sync) {
  MOKD_CHECK(!in.micro.empty(), "train step: no micro-batch");
  const int64_t want = sync ? sync->micro_per_rank() : 1;
  MOKD_CHECK(static_cast<int64_t>(in.micro.size()) == want, "train step: ", in.micro.size(),
             " micro-batches for a step of ", want);
  MOKD_CHECK(in.dropout_counters.empty() || in.dropout_counters.size() == in.micro.size(),
             "train step: ", in.dropout_counters.size(), " dropout counters for ", in.micro.size(),
             " micro-batches");
}

}  // namespace

StepStats TeacherStep::step(const StepInput& in) {
  check_input(in, sync_);
  const Device dev = model_.device();
  StepStats st;
  st.names = {"task"};
  st.weights = {1.f};
  opt_.zero_grad();
  std::vector<Tensor> losses;
  for (size_t i = 0; i < in.micro.size(); ++i) {
    const data::Batch& b = *in.micro[i];
    if (!in.dropout_counters.empty())
      model_.dropout_generator().set_counter(static_cast<uint64_t>(in.dropout_counters[i]));
    Tensor logits = model_.forward_train(b.images(dev)).logits;
    Tensor loss = b.soft_targets.defined()
                      ? cross_entropy_soft(logits, b.soft_targets.to(dev))
                      : cross_entropy(logits, b.labels.to(dev), cfg_.label_smoothing);
    if (sync_)
      sync_->backward(loss);  // the last micro-batch's reduction overlaps its backward
    else
      loss.backward();
    losses.push_back(reshape(loss.detach(), {1}));
  }
  if (sync_) sync_->finish();
  // Nothing is read back: the caller reads and checks the values (mokd/step_stats.h).
  const Tensor loss = sync_ ? sync_->mean(losses) : losses[0];
  float max_norm = cfg_.grad_clip > 0 ? cfg_.grad_clip : std::numeric_limits<float>::max();
  const Tensor grad_norm = clip_grad_norm(model_.parameters(), max_norm);
  opt_.step();
  NoGrad ng;
  set_pending(st, concat({loss, loss}, 0), grad_norm, Tensor(), Tensor(), Tensor(), Tensor(),
              Tensor());
  return st;
}

DistillStep::DistillStep(Distiller& distiller, Model& student, Optimizer& opt, GradSync* sync)
    : distiller_(distiller), student_(student), opt_(opt), sync_(sync) {}

StepStats DistillStep::step(const StepInput& in) {
  check_input(in, sync_);
  const Device dev = student_.device();
  std::vector<MicroBatch> micro;
  for (size_t i = 0; i < in.micro.size(); ++i) {
    const data::Batch& b = *in.micro[i];
    MicroBatch m;
    m.images = b.images(dev);
    m.labels = b.labels.to(dev);
    if (b.soft_targets.defined()) m.soft_targets = b.soft_targets.to(dev);
    if (!in.dropout_counters.empty()) m.dropout_counter = in.dropout_counters[i];
    micro.push_back(std::move(m));
  }
  return distiller_.step(opt_, micro, sync_);
}

}  // namespace mokd
