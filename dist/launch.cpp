// Launcher conventions (dist/launch.h): reads every convention's variables strictly, takes the
// highest one present, applies the dist.* overrides and refuses the known traps.
#include "dist/launch.h"

#include <unistd.h>

#include <charconv>
#include <optional>
#include <vector>

#include "engine/error.h"

extern char** environ;

namespace mokd::dist {

namespace {

// One launcher's variables; nullptr where it has none.
struct Convention {
  const char* name;  // Launch::launcher
  const char* rank;
  const char* world;
  const char* local_rank;
  const char* local_world;
};

// In precedence order. Slurm's local world has several sources (slurm_local_world).
constexpr Convention kConventions[] = {
    {"torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"},
    {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
     "OMPI_COMM_WORLD_LOCAL_SIZE"},
    {"mpich", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
    {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr},
};

bool is_slurm(const Convention& c) { return std::string(c.name) == "slurm"; }

// A variable's value; nullptr when unset or empty (an emptied variable reads as unset).
const std::string* get(const Environment& env, const char* name) {
  if (!name) return nullptr;
  const auto it = env.find(name);
  return it == env.end() || it->second.empty() ? nullptr : &it->second;
}

std::string show(const std::string& name, const std::string& value) { return name + "=" + value; }

// A decimal int spanning the whole string: from_chars takes an optional '-' and digits only
// (no '+', blanks or base prefix), so "1 " and "+1" are refused rather than read as 1.
std::optional<int> to_int(const std::string& s, bool* overflow = nullptr) {
  int v = 0;
  const char* end = s.data() + s.size();
  const auto [p, ec] = std::from_chars(s.data(), end, v);
  if (overflow) *overflow = ec == std::errc::result_out_of_range;
  if (ec != std::errc() || p != end) return std::nullopt;
  return v;
}

// `who` names the convention in messages ("" for none).
int parse(const std::string& name, const std::string& value, const std::string& who) {
  bool overflow = false;
  const std::optional<int> v = to_int(value, &overflow);
  const std::string of = who.empty() ? "" : " (" + who + ")";
  MOKD_CHECK(!overflow, "dist: ", name, "='", value, "'", of,
             " is out of range: expected an integer of at most 10 digits");
  MOKD_CHECK(v.has_value(), "dist: ", name, "='", value, "'", of,
             " is not an integer: expected decimal digits only, like 0 or 3");
  return *v;
}

// Slurm's per-node task counts, "4" or "2(x3),1" (two tasks on each of three nodes, then one):
// the count of this node (SLURM_NODEID), or the common one; nullopt when it cannot be told.
std::optional<int> slurm_tasks_on_node(const std::string& name, const std::string& value,
                                       const Environment& env) {
  const auto bad = [&] {
    MOKD_FAIL("dist: ", name, "='", value, "' (slurm): expected task counts like 4 or 2(x3),1");
  };
  std::vector<std::pair<int, int>> runs;  // (tasks, nodes)
  for (size_t i = 0;;) {
    size_t comma = value.find(',', i);
    if (comma == std::string::npos) comma = value.size();
    const std::string item = value.substr(i, comma - i);
    const size_t paren = item.find('(');
    int nodes = 1;
    if (paren != std::string::npos) {
      if (item.size() < paren + 4 || item.compare(paren, 2, "(x") != 0 || item.back() != ')') bad();
      const auto n = to_int(item.substr(paren + 2, item.size() - paren - 3));
      if (!n || *n < 1) bad();
      nodes = *n;
    }
    const auto tasks = to_int(item.substr(0, paren));
    if (!tasks || *tasks < 1) bad();
    runs.emplace_back(*tasks, nodes);
    if (comma == value.size()) break;
    i = comma + 1;
  }
  bool uniform = true;
  for (const auto& r : runs) uniform = uniform && r.first == runs[0].first;
  if (uniform) return runs[0].first;
  const std::string* node = get(env, "SLURM_NODEID");
  if (!node) return std::nullopt;
  const int id = parse("SLURM_NODEID", *node, "slurm");
  int first = 0;  // the first node of the current run
  if (id >= 0)
    for (const auto& r : runs) {
      if (id < first + r.second) return r.first;
      first += r.second;
    }
  MOKD_FAIL("dist: SLURM_NODEID=", *node, " (slurm) is not one of the ", first, " nodes of ", name,
            "='", value, "'");
}

// What one convention says about this process.
struct Reading {
  const Convention* c;
  int rank = 0, world = 1;
  std::optional<int> local_rank, local_world;
  std::string local_world_var;  // the variable local_world came from
};

// A convention's variables, validated; nullopt when none of them is set.
std::optional<Reading> read(const Environment& env, const Convention& c) {
  const std::string* r = get(env, c.rank);
  const std::string* w = get(env, c.world);
  const std::string* lr = get(env, c.local_rank);
  const std::string* lw = get(env, c.local_world);
  // Slurm's task count and per-node counts are also set in an allocation's own shell (salloc,
  // sbatch), where no task was started: only the per-task variables say srun started this one.
  if (is_slurm(c) ? !r && !lr : !r && !w && !lr && !lw) return std::nullopt;
  if (!r || !w) {
    std::string set, missing;
    int n_set = 0, n_missing = 0;
    for (const char* v : {c.rank, c.world, c.local_rank, c.local_world}) {
      if (!v) continue;
      if (const std::string* x = get(env, v)) {
        set += (n_set++ ? ", " : "") + show(v, *x);
      } else if (v == c.rank || v == c.world) {
        missing += (n_missing++ ? " and " : "") + std::string(v);
      }
    }
    MOKD_FAIL("dist: ", set, n_set > 1 ? " are" : " is", " set but ", missing,
              n_missing > 1 ? " are" : " is", " not: ", c.name, " sets its variables (", c.rank,
              ", ", c.world, ", ", c.local_rank, c.local_world ? ", " : "",
              c.local_world ? c.local_world : "",
              ") together, so these are half of a launch (left over from another job, or "
              "exported by hand): set ",
              missing, " too, or unset the others");
  }
  Reading out;
  out.c = &c;
  out.world = parse(c.world, *w, c.name);
  MOKD_CHECK(out.world >= 1, "dist: ", show(c.world, *w), " (", c.name,
             "): expected a world size of at least 1");
  out.rank = parse(c.rank, *r, c.name);
  MOKD_CHECK(out.rank >= 0 && out.rank < out.world, "dist: ", show(c.rank, *r), " (", c.name,
             ") is outside [0, ", out.world, ") (", show(c.world, *w), ")");
  if (lr) {
    out.local_rank = parse(c.local_rank, *lr, c.name);
    MOKD_CHECK(*out.local_rank >= 0, "dist: ", show(c.local_rank, *lr), " (", c.name,
               "): expected a local rank of 0 or more");
  }
  if (is_slurm(c)) {
    for (const char* v :
         {"SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE"})
      if (const std::string* x = get(env, v)) {
        out.local_world = slurm_tasks_on_node(v, *x, env);
        out.local_world_var = show(v, *x);
        // The allocation's counts may describe more tasks than this step started (srun -n 2
        // in an allocation of 4 per node): a count that cannot be this step's is unknown.
        if (out.local_world && (*out.local_world > out.world ||
                                (out.local_rank && *out.local_rank >= *out.local_world)))
          out.local_world.reset();
        break;
      }
  } else if (lw) {
    out.local_world = parse(c.local_world, *lw, c.name);
    out.local_world_var = show(c.local_world, *lw);
  }
  if (out.local_world) {
    MOKD_CHECK(*out.local_world >= 1 && *out.local_world <= out.world,
               "dist: ", out.local_world_var, " (", c.name,
               "): expected a local world of 1 to the world ", show(c.world, *w));
    MOKD_CHECK(!out.local_rank || *out.local_rank < *out.local_world,
               "dist: ", show(c.local_rank, *lr), " (", c.name, ") is outside [0, ",
               *out.local_world, ") (", out.local_world_var, ")");
  }
  return out;
}

std::string world_var(const Reading& r, const Environment& env) {
  return show(r.c->world, *get(env, r.c->world)) + " (" + r.c->name + ")";
}

// Slurm started several tasks, this process sees a world of 1: each task would train alone.
[[noreturn]] void fail_singleton(const Reading& slurm, const std::string& world_from,
                                 const std::string& source) {
  std::string why;
  if (source == "config")
    why = "dist.world = 1 is set: set dist.world to " + std::to_string(slurm.world) +
          " (and dist.rank), or start one task (srun -n 1)";
  else if (source == "torchrun")
    why =
        "each task runs its own one-process torchrun: start one torchrun per node with "
        "--nnodes and --nproc_per_node and a shared rendezvous, start the processes with srun "
        "alone, or set the dist.* keys (dist.rank, dist.world)";
  else
    why =
        "the MPI library was started as a singleton (built without Slurm support): launch with "
        "mpirun inside the allocation, srun --mpi=pmix, or set the dist.* keys (dist.rank, "
        "dist.world)";
  MOKD_FAIL("dist: Slurm started ", slurm.world, " tasks (SLURM_NTASKS=", slurm.world,
            ") but this process sees a world of 1 (", world_from,
            "), so every task would train its own copy of the model: ", why);
}

}  // namespace

Environment process_environment() {
  Environment env;
  for (char** e = environ; e && *e; ++e) {
    std::string kv(*e);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos) env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  return env;
}

Launch resolve_launch(const Environment& env, const LaunchOverrides& o) {
  std::vector<Reading> found;  // in precedence order
  for (const Convention& c : kConventions)
    if (std::optional<Reading> r = read(env, c)) found.push_back(*r);
  const Reading* top = found.empty() ? nullptr : &found[0];
  const bool config = o.rank >= 0 && o.world >= 0;

  // Two process launchers with different worlds: one started the other, or one's variables
  // leaked from an outer job. Which one is right cannot be told.
  if (!config)
    for (const Reading& r : found)
      if (!is_slurm(*r.c) && r.world != top->world)
        MOKD_FAIL("dist: the launchers disagree on the world size: ", world_var(*top, env), " but ",
                  world_var(r, env),
                  ": start the processes with one launcher, unset the other's variables, or "
                  "set dist.rank and dist.world");

  Launch l;
  std::string world_from = "no launcher";
  if (o.world >= 0) {
    MOKD_CHECK(o.world >= 1, "dist.world = ", o.world,
               ": expected at least 1 (or leave it unset for the launcher's)");
    l.world = o.world;
    world_from = "dist.world";
  } else if (top) {
    l.world = top->world;
    world_from = world_var(*top, env);
  } else {
    MOKD_CHECK(o.rank < 0, "dist.rank = ", o.rank,
               " is set but no launcher gives the world size: set dist.world as well");
  }
  l.launcher = config || (!top && o.world >= 0) ? "config" : top ? top->c->name : "none";

  if (l.world == 1)
    for (const Reading& r : found)
      if (is_slurm(*r.c) && r.world > 1)
        fail_singleton(r, world_from, o.world >= 0 ? "config" : top->c->name);

  std::string rank_from;
  if (o.rank >= 0) {
    l.rank = o.rank;
    rank_from = "dist.rank";
  } else if (top) {
    l.rank = top->rank;
    rank_from = show(top->c->rank, *get(env, top->c->rank));
  } else {
    MOKD_CHECK(l.world == 1, "dist.world = ", l.world,
               " is set but no launcher gives this process's rank: set dist.rank (0 to ",
               l.world - 1, ")");
  }
  MOKD_CHECK(l.rank < l.world, "dist: rank ", l.rank, " (", rank_from, ") is outside [0, ", l.world,
             ") (", world_from, ")");

  // Local numbers: from a convention that describes this same process (its rank and world are
  // the resolved ones), the highest first.
  const Reading* local_rank_src = nullptr;
  const Reading* local_world_src = nullptr;
  for (const Reading& r : found) {
    if (r.rank != l.rank || r.world != l.world) continue;
    if (!local_rank_src && r.local_rank) local_rank_src = &r;
    if (!local_world_src && r.local_world) local_world_src = &r;
  }
  if (o.local_rank >= 0) {
    l.local_rank = o.local_rank;
  } else if (local_rank_src) {
    l.local_rank = *local_rank_src->local_rank;
  } else {
    // Guessing 0 would put every rank of a node on its first GPU.
    std::string hint = "set ";
    if (top && top->local_rank)
      hint = std::string(top->c->local_rank) + " belongs to " + top->c->name + "'s rank " +
             std::to_string(top->rank) + " of " + std::to_string(top->world) +
             ", not to the one the dist.* keys give: set ";
    else if (top)
      hint = std::string(top->c->local_rank) + " is not set; set it, or ";
    MOKD_CHECK(l.world == 1, "dist: rank ", l.rank, " of ", l.world, " (", l.launcher,
               ") has no local rank (its index among the ",
               "processes on its node, which picks its GPU): ", hint,
               "dist.local_rank (--dist.local_rank=<index>)");
    l.local_rank = 0;
  }
  l.local_world = local_world_src ? *local_world_src->local_world : l.world == 1 ? 1 : 0;
  if (o.local_rank < 0 && local_rank_src && local_world_src)
    MOKD_CHECK(l.local_rank < l.local_world, "dist: local rank ", l.local_rank, " (",
               local_rank_src->c->local_rank, ", ", local_rank_src->c->name, ") is outside [0, ",
               l.local_world, ") (", local_world_src->local_world_var, ")");

  if (!o.master_addr.empty()) {
    l.master_addr = o.master_addr;
  } else if (const std::string* a = get(env, "MASTER_ADDR")) {
    l.master_addr = *a;
  }
  if (o.master_port >= 0) {
    MOKD_CHECK(o.master_port >= 1 && o.master_port <= 65535, "dist.master_port = ", o.master_port,
               ": expected a TCP port, 1 to 65535");
    l.master_port = o.master_port;
  } else if (const std::string* p = get(env, "MASTER_PORT")) {
    l.master_port = parse("MASTER_PORT", *p, "");
    MOKD_CHECK(l.master_port >= 1 && l.master_port <= 65535, "dist: MASTER_PORT=", *p,
               ": expected a TCP port, 1 to 65535");
  }
  return l;
}

std::string describe(const Launch& l) {
  return detail::concat("rank ", l.rank, " of ", l.world, " (local ", l.local_rank, " of ",
                        l.local_world > 0 ? std::to_string(l.local_world) : std::string("?"), ", ",
                        l.launcher, ")");
}

}  // namespace mokd::dist
