// The dry run's description of a built run (mokd/dry_run.h).
#include "mokd/dry_run.h"

#include <cstdio>
#include <sstream>

namespace mokd {

namespace {

std::string mib(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return b;
}

std::string count(int64_t n) {
  char b[32];
  std::snprintf(b, sizeof b, "%.2fM", static_cast<double>(n) / 1e6);
  return b;
}

void describe_split(std::ostringstream& s, const char* name, const data::Dataset& d) {
  s << name << ": " << d.location() << ": " << d.size() << " samples, " << d.num_classes()
    << " classes";
  if (d.fixed_size()) s << ", " << d.height() << "x" << d.width() << "x" << d.channels();
  s << "\n";
}

}  // namespace

std::string describe_run(const TrainConfig& cfg, TrainMode mode) {
  const std::unique_ptr<Training> t = build_training(cfg, mode);
  const bool distill = mode == TrainMode::Distill;
  std::ostringstream s;
  s << "dry run of mokd_train " << (distill ? "distill" : "teacher") << " (nothing is written)\n";
  s << "run folder: " << (cfg.run.out_dir.empty() ? default_out_dir(cfg, mode) : cfg.run.out_dir)
    << "\n";
  s << "device: " << t->device.str() << ", precision " << cfg.run.precision << "\n";
  describe_split(s, "train split", *t->train_set);
  describe_split(s, "test split", *t->test_set);
  s << "input: " << t->loader->out_height() << "x" << t->loader->out_width() << "x"
    << t->loader->channels() << "\n";

  const int64_t trained = t->model->num_parameters();
  int64_t projector = 0;
  if (distill)
    for (const auto& p : t->distiller->projector_parameters()) projector += p.second.numel();
  s << (distill ? "student " : "model ") << (distill ? cfg.model.student : cfg.model.teacher)
    << ": " << count(trained) << " parameters\n";
  int64_t frozen = 0;
  if (distill) {
    frozen = t->teacher->num_parameters();
    s << "teacher " << cfg.model.teacher << ": " << count(frozen) << " parameters, frozen, from "
      << cfg.model.teacher_weights << " (sha256 " << t->teacher_sha256.substr(0, 16) << "...)\n";
    s << "method " << cfg.distill.method;
    if (projector > 0) s << ", projector " << count(projector) << " parameters";
    s << "\n";
  }

  const int64_t spe = t->steps_per_epoch, total = t->total_steps;
  s << "batch " << cfg.data.batch_size << ": " << spe << " steps per epoch, " << total
    << " steps in total";
  if (cfg.optim.steps <= 0) s << " (" << cfg.optim.epochs << " epochs)";
  s << "\n";
  const LrSchedule& lr = *t->schedule;
  const int64_t warm = std::min(cfg.optim.warmup_steps, std::max<int64_t>(total - 1, 0));
  s << "learning rate (" << cfg.optim.optimizer << ", cosine): step 0 " << lr.lr_at(0);
  if (warm > 0) s << ", peak " << lr.lr_at(warm) << " after " << warm << " warmup steps";
  s << ", half way " << lr.lr_at(total / 2) << ", last " << lr.lr_at(total - 1)
    << "; lr x 512 / batch = " << cfg.optim.lr * 512.0 / static_cast<double>(cfg.data.batch_size)
    << " (the base of the rule lr = base x batch / 512)\n";

  // f32 master weights, gradients and optimizer state (AdamW: two moments; SGD: momentum).
  const double param_bytes = 4.0 * static_cast<double>(trained + projector);
  const double state = cfg.optim.optimizer == "sgd" ? (cfg.optim.momentum > 0 ? 1.0 : 0.0) : 2.0;
  const double ema = cfg.optim.ema_decay > 0 ? 1.0 : 0.0;
  const double train_bytes = param_bytes * (2.0 + state + ema);
  const double frozen_bytes = 4.0 * static_cast<double>(frozen);
  s << "device memory, before activations: " << mib(train_bytes + frozen_bytes)
    << " (trained weights, gradients, optimizer state" << (ema > 0 ? ", EMA" : "") << " "
    << mib(train_bytes);
  if (distill) s << "; frozen teacher " << mib(frozen_bytes);
  s << "); activations depend on the batch: `mokd_train benchmark` with the same keys measures "
       "the peak\n";
  return s.str();
}

}  // namespace mokd
