#include "engine/precision.h"

#include <atomic>
#include <string>

#include "engine/error.h"

namespace mokd {

namespace {
std::atomic<MatmulPrecision> g_precision{MatmulPrecision::F32};
}

void set_matmul_precision(MatmulPrecision p) { g_precision = p; }
MatmulPrecision matmul_precision() { return g_precision; }

const char* precision_name(MatmulPrecision p) {
  return p == MatmulPrecision::BF16 ? "bf16" : "f32";
}

MatmulPrecision parse_precision(const char* s) {
  std::string v = s;
  if (v == "f32") return MatmulPrecision::F32;
  if (v == "bf16") return MatmulPrecision::BF16;
  MOKD_FAIL("precision '", v, "': expected f32 or bf16");
}

}  // namespace mokd
