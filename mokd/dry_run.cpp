// The dry run's description of a built run (mokd/dry_run.h).
#include "mokd/dry_run.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "engine/storage.h"
#include "io/loader.h"

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

// One training step on micro-batches of `b` samples drawn by a loader with the run's options
// (transforms, erasing, mixup): the allocations' trace of bytes in use.
std::vector<size_t> trace_step(Training& t, int64_t b) {
  data::LoaderOptions o = t.loader->options();
  o.batch_size = b;
  o.shard = {};
  o.num_workers = 0;  // no thread allocating beside the traced step
  data::Batch batch;
  {
    data::Loader loader(*t.train_set, o);
    MOKD_CHECK(loader.next(batch), "dry run: the training set yields no batch of ", b);
  }
  StepInput in;
  in.micro.assign(static_cast<size_t>(t.sync ? t.sync->micro_per_rank() : 1), &batch);
  Allocator& alloc = allocator_for(t.device);
  std::vector<size_t> trace;
  alloc.trace_allocations(&trace);
  try {
    t.step->step(in);
  } catch (...) {
    alloc.trace_allocations(nullptr);
    throw;
  }
  alloc.trace_allocations(nullptr);
  return trace;
}

}  // namespace

ActivationEstimate estimate_activations(Training& t, int64_t micro_batch) {
  // Two and three samples: a batch of one takes other paths in places (no parallelism over
  // images), from two on the program is the same at every size.
  const int64_t lo = std::min<int64_t>(micro_batch, 2), hi = lo + 1;
  trace_step(t, lo);  // first step: optimizer state, weight copies and other one-time allocations
  Allocator& alloc = allocator_for(t.device);
  ActivationEstimate e;
  e.resident_bytes = static_cast<double>(alloc.bytes_in_use());
  const std::vector<size_t> a = trace_step(t, lo);
  auto top = [&](const std::vector<size_t>& v) {
    return v.empty() ? e.resident_bytes
                     : std::max(e.resident_bytes,
                                static_cast<double>(*std::max_element(v.begin(), v.end())));
  };
  if (micro_batch == lo) {  // measured as it is
    e.step_peak_bytes = top(a);
    return e;
  }
  const std::vector<size_t> b = trace_step(t, hi);
  const double extra = static_cast<double>(micro_batch - lo);
  double peak = e.resident_bytes;
  if (a.size() == b.size()) {
    // The same program at two batch sizes: every allocation's size is affine in the batch, so is
    // each point of the trace.
    for (size_t k = 0; k < a.size(); ++k) {
      const double y = static_cast<double>(a[k]), d = static_cast<double>(b[k]) - y;
      peak = std::max(peak, y + extra * d);
    }
  } else {
    // Another sequence of allocations at the other size: extrapolate the two peaks.
    e.exact_trace = false;
    peak = std::max(peak, top(a) + extra * (top(b) - top(a)));
  }
  e.step_peak_bytes = peak;
  return e;
}

std::string describe_run(const TrainConfig& cfg, TrainMode mode, bool measure_activations) {
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
  s << ")\n";
  if (!measure_activations) return s.str();
  const int64_t micro = t->loader->options().batch_size;
  const ActivationEstimate e = estimate_activations(*t, micro);
  s << "device memory during a step, estimated: peak " << mib(e.step_peak_bytes) << " at " << micro
    << " samples per micro-batch (activations and temporaries "
    << mib(e.step_peak_bytes - e.resident_bytes) << " over " << mib(e.resident_bytes)
    << " resident), from steps of 2 and 3 samples on " << t->device.str()
    << (e.exact_trace ? "" : " (peaks extrapolated)")
    << "; a GPU's caching allocator rounds blocks up, `mokd_train benchmark` measures it\n";
  return s.str();
}

}  // namespace mokd
