// Layering probe, compiled only by the ctest layering.models_includes_trainer: the models layer
// includes "mokd/trainer.h", a layer above it (or one it must not see). The build gives each layer
// only its own folder and those below it, so this must fail with "mokd/trainer.h: No such file or
// directory".
#include "mokd/trainer.h"
