// libFuzzer target for the safetensors reader: arbitrary bytes must either load or throw
// mokd::Error, never crash, hang, read out of bounds or hit undefined behaviour.
//
// Not part of the CMake build (libFuzzer needs clang): `bash tools/fuzz.sh safetensors` builds and
// runs it (with the image, IDX and config targets: `bash tools/fuzz.sh`).
#include <cstdio>
#include <cstdlib>

#include "engine/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mokd;
  bool loaded = false;
  try {
    io::Metadata meta;
    io::TensorMap m = io::load_safetensors_bytes(data, size, "<fuzz>", {}, &meta);
    for (const auto& [name, t] : m) {
      if (t.dtype() == DType::F32 && t.numel() > 0)
        (void)t.data<float>()[t.numel() - 1];  // touch the end
    }
    loaded = true;
  } catch (const Error&) {
  }
  // Every header check is independent of the value options: what loads strictly must load
  // leniently, also as bf16.
  try {
    io::LoadOptions lenient;
    lenient.allow_non_finite = true;
    lenient.float_dtype = DType::BF16;
    io::load_safetensors_bytes(data, size, "<fuzz>", lenient);
  } catch (const Error& e) {
    if (loaded) {
      std::fprintf(stderr, "loaded strictly but not leniently: %s\n", e.what());
      std::abort();
    }
  }
  return 0;
}
