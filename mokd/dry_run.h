// `mokd_train teacher|distill --dry-run`: the resolved run, without training and without writing
// anything. It builds the run as training would (so every missing file or bad key fails with the
// same named error) and describes it: the run folder, the splits and their sizes, the models and
// their parameter counts, the teacher file, steps per epoch and in total, the learning rate's key
// points (and the rule lr = base x batch / 512 it corresponds to), the device memory that the
// weights, gradients and optimizer state take, and an estimate of a step's peak memory with its
// activations (estimate_activations).
#pragma once
#include <string>

#include "mokd/config.h"
#include "mokd/setup.h"

namespace mokd {

// A step's device memory at `micro_batch` samples, found without running that batch: the run's own
// training step (same models, precision, method and loader transforms) runs once on two samples to
// make its one-time allocations, then on 2 and on 3 samples with every allocation traced
// (Allocator::trace_allocations). Each allocation's size is affine in the batch, so each point of
// the trace extrapolates linearly and the largest is the peak (a batch of one can take other paths,
// such as no parallelism over images, so it is not one of the two). A micro-batch of 1 or 2 is
// measured as it is. The steps update the models in memory: estimate on a Training that is thrown
// away afterwards.
struct ActivationEstimate {
  double resident_bytes = 0;   // in use between steps: weights, gradients, optimizer state, ...
  double step_peak_bytes = 0;  // the extrapolated high-water mark during a step
  bool exact_trace = true;     // false: the two traces differed, their peaks were extrapolated
};
ActivationEstimate estimate_activations(Training& t, int64_t micro_batch);

// measure_activations: also run estimate_activations (three steps of two or three samples).
std::string describe_run(const TrainConfig& cfg, TrainMode mode, bool measure_activations = true);

}  // namespace mokd
