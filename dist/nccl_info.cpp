// The NCCL version (dist/nccl_info.h); compiled in every build, NCCL's only with MOKD_NCCL.
#include "dist/nccl_info.h"

#ifdef MOKD_WITH_NCCL
#include <nccl.h>

#include "engine/error.h"
#endif

namespace mokd::dist {

std::string nccl_version_string() {
#ifdef MOKD_WITH_NCCL
  int code = 0;
  if (ncclGetVersion(&code) != ncclSuccess) return "unknown";
  // NCCL_VERSION(X, Y, Z) is X * 1000 + Y * 100 + Z up to 2.8, X * 10000 + Y * 100 + Z after.
  const bool wide = code >= 10000;
  const int major = wide ? code / 10000 : code / 1000;
  const int minor = wide ? code / 100 % 100 : code / 100 % 10;
  return detail::concat(major, ".", minor, ".", code % 100);
#else
  return "not built";
#endif
}

}  // namespace mokd::dist
