// Layering probe, compiled only by the ctest layering.io_includes_models: the io layer includes
// "models/model.h", a layer above it (or one it must not see). The build gives each layer only its
// own folder and those below it, so this must fail with "models/model.h: No such file or
// directory".
#include "models/model.h"
