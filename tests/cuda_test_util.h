// What every CUDA test file shares: poisoned device memory and the skip without a GPU.
#pragma once
#include <gtest/gtest.h>

#include <cstdlib>

#include "engine/backend.h"

namespace mokd::test {

// Fresh device memory is NaN (MOKD_CUDA_POISON=1, set before the first CUDA allocation unless the
// environment already says otherwise, e.g. 0 under compute-sanitizer), so an output element a
// kernel forgets to write fails the comparison.
inline const bool g_cuda_poison_requested = setenv("MOKD_CUDA_POISON", "1", 0) == 0;

}  // namespace mokd::test

// Each CUDA test starts with this: without a device (or in a CPU-only build) it skips, saying why.
// (It also reads g_cuda_poison_requested, so no toolchain may drop that initialiser.)
#define SKIP_WITHOUT_CUDA()                                                                        \
  if (!::mokd::test::g_cuda_poison_requested || !::mokd::device_available(::mokd::Device::cuda())) \
  GTEST_SKIP() << "no CUDA device: this build or machine cannot run the CUDA tests"
