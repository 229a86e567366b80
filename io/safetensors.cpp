// STUB: to be replaced by the real reader/writer.
#include "io/safetensors.h"

#include "engine/error.h"

namespace mokd::io {
TensorMap load_safetensors(const std::string& path, const LoadOptions&, Metadata*) { MOKD_FAIL("load_safetensors: not implemented yet (", path, ")"); }
void save_safetensors(const std::string& path, const TensorMap&, const Metadata&) { MOKD_FAIL("save_safetensors: not implemented yet (", path, ")"); }
}  // namespace mokd::io
