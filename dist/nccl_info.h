// Which NCCL this binary runs with, for the run's log and records (NCCL's own log needs
// NCCL_DEBUG=INFO).
#pragma once
#include <string>

namespace mokd::dist {

// "2.28.9": the NCCL library loaded at run time (ncclGetVersion; it may be newer than the headers
// the binary was built with). "not built" in a build without NCCL.
std::string nccl_version_string();

}  // namespace mokd::dist
