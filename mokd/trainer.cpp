// The loop: build the run (mokd/setup.h), resume it if asked (mokd/checkpoint.h), then step,
// log, evaluate and checkpoint until optim.steps (or optim.epochs) updates are done.
#include "mokd/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>

#include "dist/nccl_info.h"
#include "engine/host_sync.h"
#include "io/sha256.h"
#include "mokd/checkpoint.h"
#include "mokd/progress.h"

namespace mokd {

namespace {

std::atomic<int> g_stop_signal{0};  // the signal that asked for a stop; 0 = none

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal.exchange(sig) != 0) {  // second signal: default action
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

}  // namespace

void request_stop(int sig) { g_stop_signal = sig; }

int exit_code(const TrainSummary& s) { return s.signal > 0 ? 128 + s.signal : 0; }

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

class Run {
 public:
  Run(const TrainConfig& cfg, TrainMode mode, dist::Communicator& comm)
      : cfg_(cfg), mode_(mode), comm_(comm), lead_(comm.rank() == 0) {}
  TrainSummary go();

 private:
  void start();
  StepStats step(const std::vector<data::Batch>& micro);
  // Every rank checks that it runs what rank 0 runs.
  void check_ranks_agree() const;
  // Batch-norm running statistics averaged over the ranks (they are per rank while training).
  void average_running_stats();
  // Queues the step just done (its values are still on the device); `print` marks a log step.
  void queue_step(StepStats st, bool print);
  // Reads the queued steps with one host read, stops at the first step with a problem (naming
  // it; nothing after it was checkpointed), writes their metrics rows, and prints the log step's
  // progress line. Before every checkpoint and evaluation, and at every log step.
  void flush_steps();
  // Evaluates the model (and its EMA), logs it, and checkpoints, as best when top-1 improved.
  EvalResult evaluate_and_checkpoint();
  // Rank 0 writes, between barriers: every rank has finished the step before, and no rank goes on
  // before the checkpoint is complete.
  void checkpoint(bool best) {
    flush_steps();
    average_running_stats();
    comm_.barrier();
    if (lead_) save_checkpoint(*folder_, *t_, id_, progress_, best);
    comm_.barrier();
  }
  // A metrics row; a failed write stops the run before the next checkpoint.
  void log(const std::string& kind, const std::map<std::string, double>& row);
  int64_t epoch() const { return t_->loader->epoch(); }  // 0-based: the data position's

  TrainConfig cfg_;
  TrainMode mode_;
  dist::Communicator& comm_;
  bool lead_;  // rank 0: prints, logs and writes
  std::unique_ptr<RunFolder> folder_;
  std::unique_ptr<Training> t_;
  RunIdentity id_;
  std::unique_ptr<MetricsLog> metrics_;
  Progress progress_;
  EvalResult best_;
  bool tty_ = false;
  struct QueuedStep {
    StepProgress p;
    StepStats st;
    bool print = false;
  };
  std::vector<QueuedStep> queued_;
  // Images/s and the ETA: training time and images since the last printed line.
  Clock::time_point window_start_ = Clock::now();
  int64_t window_images_ = 0;
};

void Run::start() {
  // mpirun hands ranks a pseudo-terminal even when its own output goes to a file: progress lines
  // of a data-parallel run are plain lines.
  tty_ = lead_ && comm_.world() == 1 && isatty(fileno(stdout));
  cfg_.run.out_dir = default_out_dir(cfg_, mode_);
  folder_ = std::make_unique<RunFolder>(cfg_);
  // The folder is locked, everything checked and a checkpoint to resume loaded, on every rank,
  // before rank 0's first write.
  if (lead_) {
    folder_->lock();
    for (const auto& f : folder_->remove_stale_temporaries())
      std::printf("removed %s, a temporary file of a writer that is gone\n", f.c_str());
    folder_->check_fresh_run(cfg_, mode_);
  }
  const bool resume = cfg_.run.resume && folder_->has_state();
  const TrainConfig stored = resume ? folder_->check_resume(cfg_) : cfg_;
  t_ = build_training(cfg_, mode_, &comm_);  // writes nothing
  id_ = run_identity(cfg_, *t_, stored);
  if (resume) progress_ = load_checkpoint(*folder_, *t_, id_);
  check_ranks_agree();
  comm_.barrier();  // every rank has read the folder
  if (lead_) {
    if (cfg_.run.resume && !resume)
      std::printf("run.resume: no checkpoint in %s, starting from scratch\n",
                  folder_->checkpoints().c_str());
    if (!cfg_.run.resume && !folder_->run_file().empty()) folder_->remove_run_files();
    folder_->create();
    folder_->write_text(folder_->config_file(), to_toml(cfg_));
    if (resume) {
      // Rows logged after the checkpoint are logged again by the resumed steps: drop them.
      const int64_t n = folder_->drop_metrics_after(progress_.step);
      if (n > 0)
        std::printf("metrics: dropped %ld rows logged after the checkpoint's step %ld\n", (long)n,
                    (long)progress_.step);
    }
    metrics_ = folder_->open_metrics(resume);
  }
  if (resume) {
    best_.top1 = progress_.best_top1;
    best_.top5 = progress_.best_top5;
    if (lead_)
      std::printf("resumed from %s at step %ld (epoch %ld, batch %ld)\n",
                  folder_->state_file().c_str(), (long)progress_.step, (long)epoch() + 1,
                  (long)t_->loader->next_index() / cfg_.optim.accum_steps);
  } else {
    t_->loader->start_epoch(0);
  }
}

void Run::check_ranks_agree() const {
  if (comm_.world() == 1) return;
  // Every key but those that are per rank by nature: the keys decide which collectives run
  // (buckets, micro-batches, checkpoint and stop steps), so ranks that differ would not meet.
  static const TrainConfig defaults{};
  TrainConfig c = cfg_;
  c.run.device = defaults.run.device;
  c.run.threads = defaults.run.threads;
  c.data.workers = defaults.data.workers;
  c.data.prefetch = defaults.data.prefetch;
  c.dist.rank = defaults.dist.rank;
  c.dist.local_rank = defaults.dist.local_rank;
  const std::vector<std::string> mine = {sha256_hex(to_toml(c)), t_->teacher_sha256,
                                         std::to_string(progress_.step)};
  std::string joined;
  for (const std::string& m : mine) joined += m + "\n";
  const std::vector<std::string> all = comm_.all_gather(joined);
  static const char* what[] = {
      "configuration (its keys differ from rank 0's; only run.device, run.threads, data.workers, "
      "data.prefetch, dist.rank and dist.local_rank may)",
      "teacher file (model.teacher_weights' SHA-256 differs from rank 0's)",
      "starting step (it resumed from another checkpoint, or found none: every rank needs the "
      "same run folder)"};
  auto split = [](const std::string& text) {
    std::vector<std::string> out(1);
    for (char ch : text) {
      if (ch == '\n')
        out.emplace_back();
      else
        out.back() += ch;
    }
    return out;
  };
  const std::vector<std::string> first = split(all[0]);
  for (int r = 1; r < comm_.world(); ++r) {
    const std::vector<std::string> theirs = split(all[r]);
    for (size_t k = 0; k < mine.size(); ++k)
      MOKD_CHECK(k < theirs.size() && k < first.size() && theirs[k] == first[k], "dist: rank ", r,
                 " runs with another ", what[k],
                 "; every rank needs the same config file, keys and files");
  }
}

void Run::average_running_stats() {
  if (comm_.world() == 1) return;
  NoGrad ng;
  const int w = comm_.world();
  for (auto& [name, buf] : t_->model->named_buffers()) {
    if (buf.dtype() != DType::F32 || name.find("running_") == std::string::npos) continue;
    // Every rank's values, in rank order; equal values stay as they are (averaging them again
    // at every checkpoint would round them), others become their mean, added in rank order.
    Tensor mine = buf.contiguous().clone().view({-1});
    const int64_t n = mine.numel();
    Tensor all = Tensor::empty({n * w}, DType::F32, mine.device());
    comm_.gather(mine, all);
    Tensor host = all.to(Device::cpu());
    const float* v = host.data<float>();
    if (std::equal(v, v + n * (w - 1), v + n)) continue;
    std::vector<const float*> parts;
    for (int r = 0; r < w; ++r) parts.push_back(v + r * n);
    std::vector<float> mean(static_cast<size_t>(n));
    dist::add_in_order(parts, n, mean.data());
    for (float& x : mean) x *= 1.f / static_cast<float>(w);
    buf.copy_(Tensor::from_vector(mean, buf.shape()).to(buf.device()));
  }
}

// One update; an error names the step and where the last checkpoint is.
StepStats Run::step(const std::vector<data::Batch>& micro) {
  t_->optimizer->set_lr_scale(t_->schedule->lr_at(progress_.step) / t_->schedule->base_lr());
  // Drop-path masks keyed by the micro-batch's place in the run, not by the rank that runs it.
  const int64_t group = t_->loader->options().shard.group;
  StepInput in;
  for (const data::Batch& b : micro) {
    in.micro.push_back(&b);
    in.dropout_counters.push_back(dropout_counter_for(progress_.step * group + b.index % group));
  }
  // The keyed masks leave the model's own stream where it was, so a checkpoint holds the same
  // counter whatever the number of ranks.
  Generator& g = t_->model->dropout_generator();
  const uint64_t counter = g.counter();
  try {
    StepStats st = t_->step->step(in);
    g.set_counter(counter);
    return st;
  } catch (const Error& e) {
    MOKD_FAIL("step ", progress_.step + 1, ": ", e.what(),
              "; the run stops here and the last checkpoint in ", folder_->checkpoints(),
              " is intact");
  }
}

void Run::log(const std::string& kind, const std::map<std::string, double>& row) {
  if (!lead_) return;
  try {
    metrics_->write(kind, row);
  } catch (const Error& e) {
    MOKD_FAIL(e.what(), "; the run stops here and the last checkpoint in ", folder_->checkpoints(),
              " is intact");
  }
}

void Run::queue_step(StepStats st, bool print) {
  QueuedStep q;
  q.p.step = progress_.step;
  q.p.epoch = epoch() + 1;
  q.p.epochs = (t_->total_steps + t_->steps_per_epoch - 1) / t_->steps_per_epoch;
  q.p.total_steps = t_->total_steps;
  q.p.lr = t_->optimizer->current_lr(t_->optimizer->groups().size() - 1);
  q.p.world = comm_.world();
  q.st = std::move(st);
  q.print = print;
  queued_.push_back(std::move(q));
}

// A metrics row for every step; the progress line only for a log step (every log.log_every).
void Run::flush_steps() {
  if (queued_.empty()) return;
  std::vector<StepStats*> all;
  for (QueuedStep& q : queued_) all.push_back(&q.st);
  const int64_t first = queued_.front().p.step, last = queued_.back().p.step;
  auto stop = [&](const std::string& where, const std::string& what) {
    queued_.clear();
    MOKD_FAIL(where, ": ", what, "; the run stops here and the last checkpoint in ",
              folder_->checkpoints(), " is intact");
  };
  try {
    read_steps(all);  // the one host read of the window: it waits for the device
    backend_for(t_->device).check_deferred();
  } catch (const Error& e) {
    stop(first == last ? "step " + std::to_string(last)
                       : "steps " + std::to_string(first) + " to " + std::to_string(last),
         e.what());
  }
  for (const QueuedStep& q : queued_)
    if (std::string problem = q.st.problem(); !problem.empty())
      stop("step " + std::to_string(q.p.step), problem);
  for (QueuedStep& q : queued_) {
    if (q.print) {  // the window's time runs to here, where the device has finished its steps
      const double dt = seconds_since(window_start_);
      q.p.images_per_s = dt > 0 ? window_images_ / dt : 0;
      q.p.eta_s = q.p.images_per_s > 0
                      ? (q.p.total_steps - q.p.step) * static_cast<double>(cfg_.data.batch_size) /
                            q.p.images_per_s
                      : -1;
      window_start_ = Clock::now();
      window_images_ = 0;
    }
    log("step", step_row(q.p, q.st, q.print));
    if (!q.print || !lead_) continue;
    std::string line = step_line(q.p, q.st);
    if (tty_)
      std::printf("\r\033[K%s", line.c_str());
    else
      std::printf("%s\n", line.c_str());
    std::fflush(stdout);
  }
  queued_.clear();
}

EvalResult Run::evaluate_and_checkpoint() {
  flush_steps();
  if (tty_) std::printf("\n");
  average_running_stats();
  EvalResult r = evaluate(*t_->model, *t_->test_set, cfg_, t_->device, &comm_);
  EvalResult e;
  if (t_->ema)
    e = t_->ema->with_averages(
        [&] { return evaluate(*t_->model, *t_->test_set, cfg_, t_->device, &comm_); });
  const EvalResult* ema = t_->ema ? &e : nullptr;
  if (lead_) std::printf("%s\n", eval_line(progress_.step, r, ema).c_str());
  log("eval", eval_row(progress_.step, epoch(), r, ema));
  bool best = r.top1 > progress_.best_top1;
  if (best) {
    progress_.best_top1 = r.top1;
    progress_.best_top5 = r.top5;
    best_ = r;
  }
  checkpoint(best);
  return r;
}

TrainSummary Run::go() {
  auto t_start = Clock::now();
  start();
  const int world = comm_.world();
  const int64_t accum = cfg_.optim.accum_steps;
  if (lead_) {
    std::printf(
        "%s %s on %s (%s matmuls): %ld train / %ld test images, %ld steps (%ld per epoch), %ld "
        "parameters\n",
        mode_ == TrainMode::Teacher ? "teacher" : "distill", t_->model->name().c_str(),
        t_->device.str().c_str(), cfg_.run.precision.c_str(), (long)t_->train_set->size(),
        (long)t_->test_set->size(), (long)t_->total_steps, (long)t_->steps_per_epoch,
        (long)t_->model->num_parameters());
    const std::string comm = comm_.name();
    if (world > 1 || accum > 1 || comm != "local")
      std::printf("batch %ld = %d process(es) (%s) x %ld micro-batch(es) of %ld\n",
                  (long)cfg_.data.batch_size, world,
                  (comm == "nccl" ? "nccl " + dist::nccl_version_string() : comm).c_str(),
                  (long)accum, (long)t_->loader->options().batch_size);
    if (mode_ == TrainMode::Distill)
      std::printf("method %s, teacher %s (%s)\n", cfg_.distill.method.c_str(),
                  cfg_.model.teacher.c_str(), cfg_.model.teacher_weights.c_str());
  }
  TrainSummary sum;
  const int64_t total = t_->total_steps;
  const bool steps_left = progress_.step < total;
  int64_t steps_this_run = 0;
  window_start_ = Clock::now();
  window_images_ = 0;
  // The kernels' own checks (label ranges) are read with the step values, not at each kernel.
  struct DeferredChecks {
    Backend& be;
    explicit DeferredChecks(Backend& b) : be(b) { be.set_deferred_checks(true); }
    ~DeferredChecks() { be.set_deferred_checks(false); }
  } deferred(backend_for(t_->device));
  std::vector<data::Batch> micro(static_cast<size_t>(accum));
  while (progress_.step < total) {
    const uint64_t syncs_before = host_syncs();
    if (!t_->loader->next(micro[0])) {  // the epoch is over: the position moves to the next one
      flush_steps();  // the device finishes the epoch's steps inside the training time
      const auto paused = Clock::now();
      t_->loader->start_epoch(epoch() + 1);
      if (cfg_.log.eval_every > 0 && epoch() % cfg_.log.eval_every == 0)
        sum.final_eval = evaluate_and_checkpoint();
      else if (cfg_.log.checkpoint_every == 0)
        checkpoint(false);
      window_start_ += Clock::now() - paused;  // images/s and the ETA count training time only
      continue;
    }
    for (int64_t a = 1; a < accum; ++a)  // an epoch holds whole steps (io/loader.h, Shard)
      MOKD_CHECK(t_->loader->next(micro[a]), "loader: the epoch ended inside a step");
    StepStats st = step(micro);
    if (t_->ema) t_->ema->update();
    ++progress_.step;
    const int64_t s = progress_.step;
    for (const data::Batch& b : micro) window_images_ += b.size() * world;
    bool last = s == total;
    bool print =
        s % std::max<int64_t>(cfg_.log.log_every, 1) == 0 || last || s == 1 || st.diagnostics;
    queue_step(std::move(st), print);
    if (print) {
      flush_steps();
    } else {
      sum.host_syncs_between_log_steps += static_cast<int64_t>(host_syncs() - syncs_before);
      ++sum.steps_between_log_steps;
    }
    if (cfg_.log.checkpoint_every > 0 && s % cfg_.log.checkpoint_every == 0 && !last) {
      flush_steps();
      const auto paused = Clock::now();
      checkpoint(false);
      window_start_ += Clock::now() - paused;
    }
    // A signal on any rank stops every rank here, at this step boundary.
    const int sig = static_cast<int>(comm_.max_i64(g_stop_signal.exchange(0)));
    const bool signalled = sig != 0;
    if (((cfg_.run.stop_after > 0 && ++steps_this_run == cfg_.run.stop_after) || signalled) &&
        !last) {
      checkpoint(false);
      if (lead_)
        std::printf(
            "%s%s: stopped at step %ld with a checkpoint in %s; continue with --run.resume=true\n",
            tty_ ? "\n" : "", signalled ? "signal" : "run.stop_after", (long)s,
            folder_->checkpoints().c_str());
      sum.steps = s;
      sum.stopped = true;
      sum.signal = sig;
      sum.seconds = seconds_since(t_start);
      if (metrics_) metrics_->close();
      return sum;
    }
  }
  if (steps_left) sum.final_eval = evaluate_and_checkpoint();
  sum.best_eval = best_;
  sum.steps = progress_.step;
  sum.best_weights = folder_->best_weights();
  sum.seconds = seconds_since(t_start);
  if (sum.final_eval.count == 0 && progress_.step > 0)
    sum.final_eval = evaluate(*t_->model, *t_->test_set, cfg_, t_->device, &comm_);
  if (metrics_) metrics_->close();
  return sum;
}

}  // namespace

TrainSummary train(const TrainConfig& cfg, TrainMode mode, dist::Communicator* comm) {
  std::unique_ptr<dist::Communicator> local;
  if (!comm) {
    local = dist::make_local_communicator();
    comm = local.get();
  }
  if (comm->world() > 1) {
    // An error on one rank ends the job from here, while the run (and any collective still in
    // flight, with its buffers) is alive: the others must not wait for this rank.
    Run r(cfg, mode, *comm);
    try {
      return r.go();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "\nmokd_train: error on rank %d of %d: %s\n", comm->rank(),
                   comm->world(), e.what());
      std::fflush(stderr);
      comm->abort(1);
    }
  }
  Run r(cfg, mode, *comm);
  return r.go();
}

}  // namespace mokd
