// libFuzzer target for the configuration parser: an arbitrary TOML document must resolve to a
// validated TrainConfig or throw mokd::Error naming the problem, never crash or hang; a resolved
// config must survive its own TOML round trip with the same hash. Built and run by tools/fuzz.sh
// (seeds: the TOML of the defaults and of a few edited configs).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "engine/error.h"
#include "mokd/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    mokd::TrainConfig c = mokd::ConfigParser::resolve(text, "<fuzz>.toml", {});
    mokd::TrainConfig again =
        mokd::ConfigParser::resolve(mokd::to_toml(c), "<round trip>.toml", {});
    if (mokd::config_hash(c) != mokd::config_hash(again)) std::abort();
  } catch (const mokd::Error&) {
  }
  return 0;
}
