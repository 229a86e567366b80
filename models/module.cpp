// nn::Module: registration, recursive naming, train/eval, device moves and timm-layout state dicts.
#include "models/module.h"

#include <set>
#include <sstream>

namespace mokd::nn {

void Module::check_new_name(const std::string& name) const {
  MOKD_CHECK(!name.empty() && name.find('.') == std::string::npos, "Module: invalid name '", name,
             "' (non-empty, no dots)");
  for (const auto& [n, t] : params_)
    MOKD_CHECK(n != name, "Module: name '", name, "' registered twice");
  for (const auto& [n, t] : buffers_)
    MOKD_CHECK(n != name, "Module: name '", name, "' registered twice");
  for (const auto& [n, m] : children_)
    MOKD_CHECK(n != name, "Module: name '", name, "' registered twice");
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
  check_new_name(name);
  MOKD_CHECK(t.defined(), "Module: parameter '", name, "' is undefined");
  MOKD_CHECK(t.is_leaf(), "Module: parameter '", name, "' must be a leaf tensor, got ", t.str());
  t.set_requires_grad(true);
  params_.emplace_back(name, t);
  return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t) {
  check_new_name(name);
  MOKD_CHECK(t.defined(), "Module: buffer '", name, "' is undefined");
  buffers_.emplace_back(name, t);
  return t;
}

void Module::add_child(const std::string& name, std::unique_ptr<Module> m) {
  check_new_name(name);
  MOKD_CHECK(m != nullptr, "Module: child '", name, "' is null");
  m->train(training_);
  children_.emplace_back(name, std::move(m));
}

void Module::collect(const std::string& prefix, bool params, bool buffers,
                     std::vector<Entry>& out) const {
  if (params)
    for (const auto& [n, t] : params_) out.push_back({prefix + n, this, n, t});
  if (buffers)
    for (const auto& [n, t] : buffers_) out.push_back({prefix + n, this, n, t});
  for (const auto& [n, m] : children_) m->collect(prefix + n + ".", params, buffers, out);
}

NamedTensors Module::named_parameters() const {
  std::vector<Entry> es;
  collect("", true, false, es);
  NamedTensors out;
  for (auto& e : es) out.emplace_back(e.full, e.t);
  return out;
}

NamedTensors Module::named_buffers() const {
  std::vector<Entry> es;
  collect("", false, true, es);
  NamedTensors out;
  for (auto& e : es) out.emplace_back(e.full, e.t);
  return out;
}

std::vector<Tensor> Module::parameters() const {
  std::vector<Tensor> out;
  for (auto& [n, t] : named_parameters()) out.push_back(t);
  return out;
}

int64_t Module::num_parameters() const {
  int64_t n = 0;
  for (auto& t : parameters()) n += t.numel();
  return n;
}

void Module::train(bool on) {
  training_ = on;
  on_train(on);
  for (auto& [n, m] : children_) m->train(on);
}

void Module::zero_grad() {
  for (auto& t : parameters()) t.zero_grad();
}

namespace {
// Points t's impl at a copy of its data on dev; every handle to the impl follows.
void move_impl(Tensor& t, Device dev) {
  if (t.device() == dev) return;
  Tensor moved = t.to(dev).contiguous();
  TensorImpl* impl = t.impl();
  impl->storage = moved.storage();
  impl->offset = moved.offset_bytes();
  impl->strides = moved.strides();
  impl->grad.reset();
}
}  // namespace

void Module::to(Device dev) {
  for (auto& [n, t] : params_) move_impl(t, dev);
  for (auto& [n, t] : buffers_) move_impl(t, dev);
  for (auto& [n, m] : children_) m->to(dev);
}

Device Module::device() const {
  std::vector<Entry> es;
  collect("", true, true, es);
  return es.empty() ? Device::cpu() : es.front().t.device();
}

io::TensorMap Module::state_dict() const {
  std::vector<Entry> es;
  collect("", true, true, es);
  io::TensorMap out;
  for (auto& e : es) out[e.full] = e.owner->to_file(e.local, e.t.detach()).clone();
  return out;
}

void Module::load_state_dict(const io::TensorMap& sd, bool strict,
                             const std::set<std::string>& keep) {
  std::vector<Entry> es;
  collect("", true, true, es);
  std::vector<std::string> missing, unexpected, wrong;
  std::set<std::string> known;
  for (auto& e : es) known.insert(e.full);
  for (auto& k : keep)
    MOKD_CHECK(known.count(k), "load_state_dict: '", k,
               "' is to keep its value, but the model has no such entry");
  for (auto& e : es) {
    if (keep.count(e.full)) continue;
    auto it = sd.find(e.full);
    if (it == sd.end()) {
      if (!e.owner->absent_value(e.local, e.t).defined()) missing.push_back(e.full);
      continue;
    }
    Shape want = e.owner->file_shape(e.local, e.t);
    if (it->second.shape() != want)
      wrong.push_back(e.full + ": file " + shape_str(it->second.shape()) + " vs model " +
                      shape_str(want));
  }
  for (auto& [n, t] : sd)
    if (!known.count(n)) unexpected.push_back(n);

  const bool fail = !wrong.empty() || (strict && (!missing.empty() || !unexpected.empty()));
  if (fail) {
    std::ostringstream os;
    os << "load_state_dict" << (strict ? " (strict)" : "")
       << ": state dict does not match the model";
    auto list = [&](const char* what, const std::vector<std::string>& v) {
      if (v.empty()) return;
      os << "\n  " << what << " (" << v.size() << "):";
      for (auto& s : v) os << "\n    " << s;
    };
    list("wrong shape", wrong);
    if (strict) {
      list("missing", missing);
      list("unexpected", unexpected);
    }
    throw Error(os.str());
  }
  NoGrad ng;
  for (auto& e : es) {
    if (keep.count(e.full)) continue;
    auto it = sd.find(e.full);
    Tensor file = it != sd.end() ? it->second : e.owner->absent_value(e.local, e.t);
    if (!file.defined()) continue;  // missing, not strict
    Tensor v = e.owner->from_file(e.local, file);
    e.t.copy_(v);
  }
}

}  // namespace mokd::nn
