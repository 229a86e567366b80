// mokd errors: every user-facing failure is a mokd::Error whose message names the input (op, file,
// tensor, config key) and what was expected.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace mokd {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace mokd

// MOKD_CHECK(cond, parts...): throw mokd::Error with the streamed parts when cond is false.
#define MOKD_CHECK(cond, ...)                                              \
  do {                                                                     \
    if (!(cond)) throw ::mokd::Error(::mokd::detail::concat(__VA_ARGS__)); \
  } while (0)

#define MOKD_FAIL(...) throw ::mokd::Error(::mokd::detail::concat(__VA_ARGS__))
