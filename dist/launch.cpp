// Launcher conventions (dist/launch.h). Placeholder resolution: overrides only.
#include "dist/launch.h"

#include <unistd.h>

extern char** environ;

namespace mokd::dist {

Environment process_environment() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

Launch resolve_launch(const Environment&, const LaunchOverrides& o) {
  Launch l;
  if (o.world > 0) l.world = o.world;
  if (o.rank >= 0) l.rank = o.rank;
  if (o.local_rank >= 0) l.local_rank = o.local_rank;
  return l;
}

}  // namespace mokd::dist
