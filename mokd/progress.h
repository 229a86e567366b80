// What a run reports while it trains: the metrics rows of a step and of an evaluation
// (metrics.jsonl/csv, see mokd/metrics.h) and the progress lines printed to stdout.
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "mokd/distill.h"
#include "mokd/evaluate.h"

namespace mokd {

using MetricsRow = std::map<std::string, double>;

// Where a step stands, for its row and its progress line.
struct StepProgress {
  int64_t step = 0;    // steps done, this one included
  int64_t epoch = 0;   // 1-based
  int64_t epochs = 0;  // of the whole run
  int64_t total_steps = 0;
  double lr = 0;            // the last group's (the decayed weights')
  double images_per_s = 0;  // since the last printed line, all ranks together
  int world = 1;            // processes of a data-parallel run (shown when > 1)
  double eta_s = -1;        // negative: unknown
};

// step, epoch, lr, total, grad_norm, loss.<objective>, weight.<objective> (more than one
// objective), cos.<i>.<j> and ratio.<i>.<j> (diagnostic steps), and images_per_s when with_speed.
MetricsRow step_row(const StepProgress& p, const StepStats& st, bool with_speed);

// "epoch 1/2 step 8/12 | 310 img/s | ETA 0m02s | loss task 2.3012 kl 0.1 | w 0.333/... |
// lr 1.00e-03"
std::string step_line(const StepProgress& p, const StepStats& st);

// step, epoch, top1, top5, eval_loss, and ema.top1/ema.top5 when ema is given.
MetricsRow eval_row(int64_t step, int64_t epoch, const EvalResult& r, const EvalResult* ema);

// "eval after 12 steps: top-1 ...% top-5 ...% loss ...  (EMA top-1 ...%)"
std::string eval_line(int64_t step, const EvalResult& r, const EvalResult* ema);

// 1h02m, 3m07s; "?" for a negative or non-finite duration.
std::string human_time(double seconds);

}  // namespace mokd
