// The checkpoint state of one component of a training run (optimizer, FAMO, projector,
// distiller, loader position, random stream, EMA): named tensors and named integer counters.
//
// Each component writes its own with state() and restores from one with load_state(); the
// checkpoint (mokd/checkpoint.h) only composes them under prefixes with add() and splits them
// again with part(), so no checkpoint code reads a component's fields. Tensors are stored in
// checkpoints/state.safetensors under "<prefix>.<name>", counters in its JSON metadata under
// "<prefix>_<name>" (an empty prefix adds the names as they are).
#pragma once
#include <cstdint>
#include <map>
#include <string>

#include "engine/rng.h"
#include "io/safetensors.h"

namespace mokd::io {

struct State {
  // Tensors as the component holds them (live handles, not copies: write them out before the
  // component changes them again).
  TensorMap tensors;
  std::map<std::string, int64_t> counters;

  // Adds every entry of `part` under `prefix`; throws naming the entry if it is already here.
  void add(const std::string& prefix, const State& part);
  // The entries under `prefix`, with the prefix removed (what add(prefix, ...) put there).
  State part(const std::string& prefix) const;

  // One entry; throws naming it (and `who`, the component reading it) when it is missing or,
  // for tensors, not of `shape` (when given).
  const Tensor& tensor(const std::string& name, const char* who) const;
  const Tensor& tensor(const std::string& name, const Shape& shape, const char* who) const;
  int64_t counter(const std::string& name, const char* who) const;
};

// A random stream's state: its counter (the seed comes from the configuration).
State generator_state(const Generator& g);
void load_generator_state(Generator& g, const State& s);

}  // namespace mokd::io
