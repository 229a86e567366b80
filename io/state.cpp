#include "io/state.h"

#include <limits>

#include "engine/error.h"

namespace mokd::io {

namespace {

std::string join(const std::string& prefix, const char* sep, const std::string& name) {
  return prefix.empty() ? name : prefix + sep + name;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.size() > prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

void State::add(const std::string& prefix, const State& part) {
  for (const auto& [k, v] : part.tensors) {
    std::string name = join(prefix, ".", k);
    MOKD_CHECK(!tensors.count(name), "checkpoint state: tensor ", name, " is written twice");
    tensors[name] = v;
  }
  for (const auto& [k, v] : part.counters) {
    std::string name = join(prefix, "_", k);
    MOKD_CHECK(!counters.count(name), "checkpoint state: counter ", name, " is written twice");
    counters[name] = v;
  }
}

State State::part(const std::string& prefix) const {
  if (prefix.empty()) return *this;
  State out;
  const std::string tp = prefix + ".", cp = prefix + "_";
  for (const auto& [k, v] : tensors)
    if (starts_with(k, tp)) out.tensors[k.substr(tp.size())] = v;
  for (const auto& [k, v] : counters)
    if (starts_with(k, cp)) out.counters[k.substr(cp.size())] = v;
  return out;
}

const Tensor& State::tensor(const std::string& name, const char* who) const {
  auto it = tensors.find(name);
  MOKD_CHECK(it != tensors.end(), who, ": the checkpoint state has no tensor ", name);
  return it->second;
}

const Tensor& State::tensor(const std::string& name, const Shape& shape, const char* who) const {
  const Tensor& t = tensor(name, who);
  MOKD_CHECK(t.shape() == shape, who, ": the checkpoint's ", name, " is ", t.str(),
             ", expected shape ", shape_str(shape));
  return t;
}

int64_t State::counter(const std::string& name, const char* who) const {
  auto it = counters.find(name);
  MOKD_CHECK(it != counters.end(), who, ": the checkpoint state has no counter ", name);
  return it->second;
}

State generator_state(const Generator& g) {
  MOKD_CHECK(g.counter() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
             "random stream: counter ", g.counter(), " does not fit a checkpoint counter");
  State s;
  s.counters["counter"] = static_cast<int64_t>(g.counter());
  return s;
}

void load_generator_state(Generator& g, const State& s) {
  int64_t c = s.counter("counter", "random stream");
  MOKD_CHECK(c >= 0, "random stream: counter must be >= 0, got ", c);
  g.set_counter(static_cast<uint64_t>(c));
}

}  // namespace mokd::io
