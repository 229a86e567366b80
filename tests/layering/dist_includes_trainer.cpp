// Layering probe, compiled only by the ctest layering.dist_includes_trainer: the dist layer
// includes "mokd/trainer.h", a layer above it. The build gives each layer only its own folder and
// those below it, so this must fail with "mokd/trainer.h: No such file or directory".
#include "mokd/trainer.h"
