// `mokd_train teacher|distill --dry-run`: the resolved run, without training and without writing
// anything. It builds the run as training would (so every missing file or bad key fails with the
// same named error) and describes it: the run folder, the splits and their sizes, the models and
// their parameter counts, the teacher file, steps per epoch and in total, the learning rate's key
// points (and the rule lr = base x batch / 512 it corresponds to), and the device memory that the
// weights, gradients and optimizer state take.
#pragma once
#include <string>

#include "mokd/config.h"
#include "mokd/setup.h"

namespace mokd {

std::string describe_run(const TrainConfig& cfg, TrainMode mode);

}  // namespace mokd
