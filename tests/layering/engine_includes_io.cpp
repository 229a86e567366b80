// Layering probe, compiled only by the ctest layering.engine_includes_io: the engine layer includes
// "io/safetensors.h", a layer above it (or one it must not see). The build gives each layer only
// its own folder and those below it, so this must fail with "io/safetensors.h: No such file or
// directory".
#include "io/safetensors.h"
