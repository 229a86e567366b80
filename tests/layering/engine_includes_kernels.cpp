// Layering probe, compiled only by the ctest layering.engine_includes_kernels: the engine layer
// includes "kernels/launch.cuh", a layer above it (or one it must not see). The build gives each
// layer only its own folder and those below it, so this must fail with "kernels/launch.cuh: No such
// file or directory".
#include "kernels/launch.cuh"
