// Layering probe, compiled only by the ctest layering.kernels_include_tensor: device code in
// kernels/ includes "engine/tensor.h". kernels/ sees only the plain kernel types of the engine
// (engine/kernel_types.h, bf16.h, rng.h, error.h, cuda/check.h), so this must fail with
// "engine/tensor.h: No such file or directory".
#include "engine/tensor.h"
