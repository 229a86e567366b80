// Layering probe, compiled only by the ctest layering.engine_includes_models: the engine layer
// includes "models/module.h", a layer above it (or one it must not see). The build gives each layer
// only its own folder and those below it, so this must fail with "models/module.h: No such file or
// directory".
#include "models/module.h"
