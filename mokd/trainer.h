// The training loop of mokd_train: teacher training (cross-entropy) and distillation (any method
// of mokd/distill.h) through one step interface (mokd/train_step.h), with evaluation, EMA,
// checkpoints, resume, metrics and progress. What a run is built from: mokd/setup.h; its files
// and checkpoint format: mokd/checkpoint.h.
#pragma once
#include <cstdint>
#include <string>

#include "mokd/config.h"
#include "mokd/evaluate.h"
#include "mokd/setup.h"

namespace mokd {

struct TrainSummary {
  EvalResult final_eval, best_eval;
  int64_t steps = 0;
  double seconds = 0;
  std::string best_weights;  // path
  bool stopped = false;      // run.stop_after or a signal ended this invocation early
  int signal = 0;            // the signal that stopped it (SIGINT, SIGTERM); 0 otherwise
  // Host synchronisations (engine/host_sync.h) in the steps that were not log steps, from the
  // loader's batch to the queued values: 0 when a step runs without the host waiting for the
  // device (log steps, checkpoints and evaluations read, and are not counted).
  int64_t host_syncs_between_log_steps = 0;
  int64_t steps_between_log_steps = 0;  // the steps counted there
};

// mokd_train's exit status after a run: 0 when it finished or run.stop_after stopped it (a planned
// stop), 128 + the signal number when a signal stopped it (130 for SIGINT, 143 for SIGTERM), as a
// shell reports a process killed by that signal, so that `mokd_train distill ... && next` does not
// go on with a half-trained model. Errors exit with 1.
int exit_code(const TrainSummary& s);

// Runs a whole training (or resumes one when cfg.run.resume). Prints progress to stdout.
// Data-parallel (docs/distributed.md): every rank of `comm` calls train() with the same
// configuration (checked: the config hash and the teacher file's SHA-256 of every rank must match
// rank 0's); rank 0 alone prints, logs metrics and writes the run folder, after a barrier, and
// every rank stops at the same step boundary when any of them gets SIGINT/SIGTERM. null: one
// process.
TrainSummary train(const TrainConfig& cfg, TrainMode mode, dist::Communicator* comm = nullptr);

// SIGINT/SIGTERM (Ctrl-C, a cluster's preemption notice) make a running train() finish its
// current step, write a checkpoint and return with stopped = true and signal set, instead of
// dying mid-step. A second signal while that happens ends the process as usual.
void install_stop_handlers();
// What the handlers do on signal `sig`; also for tests.
void request_stop(int sig);

}  // namespace mokd
