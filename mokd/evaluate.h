// Evaluation of a classifier on a dataset: top-1, top-5 and mean cross-entropy, with the
// config's normalisation and evaluation batch size and no augmentation.
#pragma once
#include <cstdint>

#include "dist/communicator.h"
#include "io/dataset.h"
#include "models/model.h"
#include "mokd/config.h"

namespace mokd {

struct EvalResult {
  double top1 = 0, top5 = 0, loss = 0;  // percentages; mean cross-entropy (no label smoothing)
  int64_t count = 0;                    // images evaluated
};

// Runs the model in eval mode under NoGrad (its train/eval mode is restored afterwards). A sample
// counts for top-k when fewer than k classes rank above its label: a higher score, or an equal
// score at a lower class index (ties break by index, as argmax does). Throws for an
// empty dataset. With a communicator of several ranks, each evaluates its contiguous share of ds
// (no sample twice, none left out) and every rank returns the totals: counts summed exactly, the
// loss sums added in rank order.
EvalResult evaluate(Model& model, const data::Dataset& ds, const TrainConfig& cfg, Device dev,
                    dist::Communicator* comm = nullptr);

}  // namespace mokd
