// Optimizers, parameter groups and gradient clipping: host-side bookkeeping around the backend's
// multi-tensor kernels (adam_update_multi / sgd_update_multi / sum_squares_multi / scale_multi),
// called once per device for all parameters of all groups.
#include "mokd/optim.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <set>

#include "engine/backend.h"
#include "engine/error.h"
#include "engine/precision.h"
#include "engine/weight_copies.h"

namespace mokd {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool finite_nonneg(float x) { return std::isfinite(x) && x >= 0.f; }

std::string slot_key(const char* opt, const std::string& slot, size_t g, size_t i) {
  return detail::concat(opt, ".", slot, ".", g, ".", i);
}

bool parse_index(const std::string& s, size_t& out) {
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

int64_t integer_scalar(const std::string& key, const Tensor& t) {
  MOKD_CHECK(t.defined() && (t.dtype() == DType::I64 || t.dtype() == DType::I32) && t.numel() == 1,
             "load_state: ", key, " must be one integer (i64), got ",
             t.defined() ? t.str() : std::string("undefined"));
  return t.to_vector_i64()[0];
}

}  // namespace

std::vector<ParamGroup> decay_groups(const NamedTensors& named_params, float lr, float weight_decay,
                                     const std::vector<std::string>& no_decay_names) {
  std::set<std::string> skip(no_decay_names.begin(), no_decay_names.end());
  ParamGroup no_decay{{}, lr, 0.f}, decay{{}, lr, weight_decay};
  for (const auto& [name, p] : named_params) {
    MOKD_CHECK(p.defined(), "decay_groups: parameter ", name, " is undefined");
    if (!p.requires_grad()) continue;
    if (p.dim() <= 1 || ends_with(name, ".bias") || skip.count(name))
      no_decay.params.push_back(p);
    else
      decay.params.push_back(p);
  }
  return {std::move(no_decay), std::move(decay)};
}

// ---------------------------------------------------------------------------------------------
// Optimizer

Optimizer::Optimizer(const char* name, std::vector<ParamGroup> groups)
    : groups_(std::move(groups)), name_(name) {
  MOKD_CHECK(!groups_.empty(), name_, ": no parameter groups");
  std::set<const TensorImpl*> seen;
  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& pg = groups_[g];
    MOKD_CHECK(finite_nonneg(pg.lr), name_, ": lr of group ", g, " must be finite and >= 0, got ",
               pg.lr);
    MOKD_CHECK(finite_nonneg(pg.weight_decay), name_, ": weight_decay of group ", g,
               " must be finite and >= 0, got ", pg.weight_decay);
    for (size_t i = 0; i < pg.params.size(); ++i) {
      const Tensor& p = pg.params[i];
      MOKD_CHECK(p.defined(), name_, ": param ", g, ".", i, " is undefined");
      MOKD_CHECK(p.dtype() == DType::F32, name_, ": param ", g, ".", i,
                 " must be f32 (the master copy), got ", p.str());
      MOKD_CHECK(p.is_leaf(), name_, ": param ", g, ".", i, " ", p.str(),
                 " is not a leaf (the result of an op)");
      MOKD_CHECK(p.is_contiguous(), name_, ": param ", g, ".", i, " ", p.str(),
                 " must be contiguous");
      MOKD_CHECK(seen.insert(p.impl()).second, name_, ": param ", g, ".", i, " ", p.str(),
                 " appears more than once in the parameter groups");
    }
    state_.emplace_back(pg.params.size());
    lr_.push_back(pg.lr);
  }
}

void Optimizer::step() {
  // Every gradient is checked before any parameter or state changes.
  std::vector<Pending> pending;
  for (size_t g = 0; g < groups_.size(); ++g) {
    ParamGroup& pg = groups_[g];
    for (size_t i = 0; i < pg.params.size(); ++i) {
      const Tensor& p = pg.params[i];
      Tensor grad = p.grad();
      if (!grad.defined()) continue;  // PyTorch: parameters without a gradient are skipped
      MOKD_CHECK(
          grad.dtype() == DType::F32 && grad.shape() == p.shape() && grad.device() == p.device(),
          name_, ".step: the grad of param ", g, ".", i, " is ", grad.str(),
          ", expected f32 with the param's shape and device ", p.str());
      pending.push_back({p, grad.contiguous(), &state_[g][i], lr_[g], pg.weight_decay});
    }
  }
  const size_t nslots = slot_names().size();
  // Parameters by device, in order (normally one device: one backend call per step).
  std::vector<std::pair<Device, std::vector<Pending>>> by_device;
  for (Pending& u : pending) {
    ParamState& st = *u.st;
    if (st.slots.empty()) {
      for (size_t s = 0; s < nslots; ++s)
        st.slots.push_back(Tensor::zeros(u.p.shape(), DType::F32, u.p.device()));
    }
    const Device d = u.p.device();
    size_t k = 0;
    while (k < by_device.size() && !(by_device[k].first == d)) ++k;
    if (k == by_device.size()) by_device.emplace_back(d, std::vector<Pending>{});
    by_device[k].second.push_back(std::move(u));
  }
  // A parameter's step count advances with its update: when a device's call throws (out of
  // memory, say), its counts go back, so bias correction stays in step with the real updates.
  for (const auto& [dev, list] : by_device) {
    for (const Pending& u : list) ++u.st->step;
    try {
      update(list, dev);
    } catch (...) {
      for (const Pending& u : list) --u.st->step;
      throw;
    }
  }
  ++steps_;
}

void Optimizer::zero_grad() {
  for (ParamGroup& pg : groups_)
    for (Tensor& p : pg.params) p.zero_grad();
}

void Optimizer::set_lr_scale(float scale) {
  MOKD_CHECK(finite_nonneg(scale), name_, ": lr scale must be finite and >= 0, got ", scale);
  lr_scale_ = scale;
  for (size_t g = 0; g < groups_.size(); ++g)
    lr_[g] = static_cast<float>(static_cast<double>(groups_[g].lr) * scale);
}

void Optimizer::set_group_lr(size_t group, float lr) {
  MOKD_CHECK(group < groups_.size(), name_, ": group ", group, " out of range (", groups_.size(),
             " groups)");
  MOKD_CHECK(finite_nonneg(lr), name_, ": lr of group ", group, " must be finite and >= 0, got ",
             lr);
  lr_[group] = lr;
}

float Optimizer::current_lr(size_t group) const {
  MOKD_CHECK(group < groups_.size(), name_, ": group ", group, " out of range (", groups_.size(),
             " groups)");
  return lr_[group];
}

NamedTensors Optimizer::state() const {
  NamedTensors out;
  out.emplace_back(detail::concat(name_, ".steps"), Tensor::from_vector_i64({steps_}, {}));
  std::vector<std::string> slots = slot_names();
  for (size_t g = 0; g < state_.size(); ++g) {
    for (size_t i = 0; i < state_[g].size(); ++i) {
      const ParamState& st = state_[g][i];
      if (st.step == 0) continue;
      out.emplace_back(slot_key(name_, "step", g, i), Tensor::from_vector_i64({st.step}, {}));
      for (size_t s = 0; s < slots.size() && s < st.slots.size(); ++s)
        out.emplace_back(slot_key(name_, slots[s], g, i), st.slots[s]);
    }
  }
  return out;
}

void Optimizer::load_state(const std::map<std::string, Tensor>& state) {
  const std::vector<std::string> slots = slot_names();
  const std::string prefix = std::string(name_) + ".";
  // Parse into fresh state first, so a bad entry leaves this optimizer unchanged.
  std::vector<std::vector<ParamState>> fresh(state_.size());
  for (size_t g = 0; g < state_.size(); ++g) fresh[g].resize(state_[g].size());
  std::vector<std::vector<std::vector<Tensor>>> found(state_.size());  // [g][i][slot]
  for (size_t g = 0; g < state_.size(); ++g)
    found[g].assign(state_[g].size(), std::vector<Tensor>(slots.size()));
  bool have_steps = false;
  int64_t steps = 0;

  for (const auto& [key, t] : state) {
    MOKD_CHECK(key.compare(0, prefix.size(), prefix) == 0, "load_state: entry ", key,
               " does not belong to optimizer ", name_);
    std::string rest = key.substr(prefix.size());
    if (rest == "steps") {
      steps = integer_scalar(key, t);
      MOKD_CHECK(steps >= 0, "load_state: ", key, " must be >= 0, got ", steps);
      have_steps = true;
      continue;
    }
    // "<slot>.<group>.<index>"
    size_t d2 = rest.rfind('.');
    size_t d1 = d2 == std::string::npos || d2 == 0 ? std::string::npos : rest.rfind('.', d2 - 1);
    size_t g = 0, i = 0;
    MOKD_CHECK(d1 != std::string::npos && parse_index(rest.substr(d1 + 1, d2 - d1 - 1), g) &&
                   parse_index(rest.substr(d2 + 1), i),
               "load_state: entry ", key, " is not named <optimizer>.<slot>.<group>.<index>");
    std::string slot = rest.substr(0, d1);
    MOKD_CHECK(g < state_.size() && i < state_[g].size(), "load_state: entry ", key,
               " names a parameter this optimizer does not have");
    const Tensor& p = groups_[g].params[i];
    if (slot == "step") {
      int64_t s = integer_scalar(key, t);
      MOKD_CHECK(s >= 1, "load_state: ", key, " must be >= 1, got ", s);
      fresh[g][i].step = s;
      continue;
    }
    size_t k = 0;
    while (k < slots.size() && slots[k] != slot) ++k;
    MOKD_CHECK(k < slots.size(), "load_state: entry ", key, " has unknown slot '", slot,
               "' for optimizer ", name_);
    MOKD_CHECK(t.defined() && is_floating(t.dtype()) && t.shape() == p.shape(), "load_state: ", key,
               " is ", t.defined() ? t.str() : std::string("undefined"),
               ", expected a float tensor shaped like its parameter ", p.str());
    Tensor copy = Tensor::empty(p.shape(), DType::F32, p.device());
    copy.copy_(t);
    found[g][i][k] = copy;
  }
  MOKD_CHECK(have_steps, "load_state: missing entry ", prefix, "steps");
  for (size_t g = 0; g < fresh.size(); ++g) {
    for (size_t i = 0; i < fresh[g].size(); ++i) {
      for (size_t k = 0; k < slots.size(); ++k) {
        bool has = found[g][i][k].defined();
        MOKD_CHECK(has == (fresh[g][i].step > 0), "load_state: ",
                   has ? slot_key(name_, "step", g, i) : slot_key(name_, slots[k], g, i),
                   " is missing (state entries of a parameter come together)");
      }
      if (fresh[g][i].step > 0) fresh[g][i].slots = std::move(found[g][i]);
    }
  }
  state_ = std::move(fresh);
  steps_ = steps;
}

// ---------------------------------------------------------------------------------------------
// bf16 weight copies

namespace {
// In the bf16 mode every parameter keeps a bf16 copy that the update rewrites in the same pass
// (engine/weight_copies.h): products read weights and biases from them, so no step rounds a
// parameter again (the copies of norm weights go unread: a few bytes). Outside the mode the
// copies are dropped: an f32 step does not keep them current.
Tensor weight_copy_for_update(const Tensor& p) {
  if (matmul_precision() != MatmulPrecision::BF16 || !can_keep_bf16_copy(p)) {
    drop_bf16_copy(p);
    return Tensor();
  }
  Tensor copy = bf16_copy_of(p);
  return copy.defined() ? copy : make_bf16_copy(p);
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// Adam / AdamW

namespace {
void check_adam_options(const char* name, const AdamOptions& o) {
  MOKD_CHECK(std::isfinite(o.beta1) && o.beta1 >= 0.f && o.beta1 < 1.f, name,
             ": beta1 must be in [0, 1), got ", o.beta1);
  MOKD_CHECK(std::isfinite(o.beta2) && o.beta2 >= 0.f && o.beta2 < 1.f, name,
             ": beta2 must be in [0, 1), got ", o.beta2);
  MOKD_CHECK(std::isfinite(o.eps) && o.eps > 0.f, name, ": eps must be > 0, got ", o.eps);
}
}  // namespace

AdamW::AdamW(std::vector<ParamGroup> groups, const AdamOptions& opt)
    : AdamW("adamw", std::move(groups), opt, true) {}

AdamW::AdamW(const char* name, std::vector<ParamGroup> groups, const AdamOptions& opt,
             bool decoupled)
    : Optimizer(name, std::move(groups)), opt_(opt), decoupled_(decoupled) {
  check_adam_options(name, opt);
}

void AdamW::update(const std::vector<Pending>& list, Device dev) {
  std::vector<AdamTensorRef> refs;
  refs.reserve(list.size());
  for (const Pending& u : list) {
    AdamTensorRef r{u.p, u.g, u.st->slots[0], u.st->slots[1], {}};
    r.h.lr = u.lr;
    r.h.beta1 = opt_.beta1;
    r.h.beta2 = opt_.beta2;
    r.h.eps = opt_.eps;
    r.h.weight_decay = u.weight_decay;
    r.h.step = u.st->step;
    r.h.decoupled = decoupled_;
    r.p_bf16 = weight_copy_for_update(u.p);
    refs.push_back(std::move(r));
  }
  backend_for(dev).adam_update_multi(refs);
}

Adam::Adam(std::vector<ParamGroup> groups, const AdamOptions& opt)
    : AdamW("adam", std::move(groups), opt, false) {}

// ---------------------------------------------------------------------------------------------
// SGD

SGD::SGD(std::vector<ParamGroup> groups, const SgdOptions& opt)
    : Optimizer("sgd", std::move(groups)), opt_(opt) {
  MOKD_CHECK(std::isfinite(opt.momentum) && opt.momentum >= 0.f,
             "sgd: momentum must be finite and >= 0, got ", opt.momentum);
  MOKD_CHECK(std::isfinite(opt.dampening), "sgd: dampening must be finite, got ", opt.dampening);
  MOKD_CHECK(!opt.nesterov || (opt.momentum > 0.f && opt.dampening == 0.f),
             "sgd: nesterov needs momentum > 0 and dampening 0, got momentum ", opt.momentum,
             " and dampening ", opt.dampening);
}

std::vector<std::string> SGD::slot_names() const {
  if (opt_.momentum == 0.f) return {};
  return {"momentum_buffer"};
}

void SGD::update(const std::vector<Pending>& list, Device dev) {
  std::vector<SgdTensorRef> refs;
  refs.reserve(list.size());
  for (const Pending& u : list) {
    SgdTensorRef r{u.p, u.g, u.st->slots.empty() ? Tensor() : u.st->slots[0], {}};
    r.h.lr = u.lr;
    r.h.momentum = opt_.momentum;
    r.h.dampening = opt_.dampening;
    r.h.weight_decay = u.weight_decay;
    r.h.nesterov = opt_.nesterov;
    r.h.first_step = u.st->step == 1;  // the buffer starts as the gradient itself
    r.p_bf16 = weight_copy_for_update(u.p);
    refs.push_back(std::move(r));
  }
  backend_for(dev).sgd_update_multi(refs);
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

Tensor clip_grad_norm(const std::vector<Tensor>& params, float max_norm) {
  MOKD_CHECK(std::isfinite(max_norm) && max_norm > 0.f,
             "clip_grad_norm: max_norm must be finite and > 0, got ", max_norm);
  std::vector<Tensor> with_grad;
  std::vector<const TensorImpl*> seen;  // a parameter listed twice counts once (and is scaled once)
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    MOKD_CHECK(p.defined(), "clip_grad_norm: param ", i, " is undefined");
    Tensor g = p.grad();
    if (!g.defined()) continue;
    if (std::find(seen.begin(), seen.end(), p.impl()) != seen.end()) continue;
    seen.push_back(p.impl());
    MOKD_CHECK(g.dtype() == DType::F32, "clip_grad_norm: the grad of param ", i, " is ", g.str(),
               ", expected f32");
    MOKD_CHECK(with_grad.empty() || g.device() == with_grad[0].grad().device(),
               "clip_grad_norm: the grad of param ", i, " is ", g.str(),
               " but earlier grads are on ", with_grad[0].grad().device().str(),
               "; all grads must be on one device");
    with_grad.push_back(p);
  }
  Device dev = !with_grad.empty() ? with_grad[0].grad().device()
               : !params.empty()  ? params[0].device()
                                  : Device::cpu();
  Tensor total = Tensor::zeros({}, DType::F32, dev);
  if (with_grad.empty()) return total;
  // The in-place scale needs contiguous gradients: replace any other first (same values).
  std::vector<Tensor> grads;
  grads.reserve(with_grad.size());
  for (const Tensor& cp : with_grad) {
    Tensor p = cp;  // a handle: set_grad changes the shared parameter
    Tensor g = p.grad();
    if (!g.is_contiguous()) {
      g = g.contiguous();
      p.set_grad(g);
    }
    grads.push_back(g);
  }
  std::vector<const Tensor*> read;
  std::vector<Tensor*> write;
  for (Tensor& g : grads) {
    read.push_back(&g);
    write.push_back(&g);
  }
  // Norm, clip factor and scale all stay on the device: the factor is read by the kernel.
  Backend& be = backend_for(dev);
  be.sum_squares_multi(read, total);
  Tensor norm = Tensor::empty({}, DType::F32, dev);
  be.unary(UnaryOp::Sqrt, total, norm, 0.f);
  Tensor coef = Tensor::empty({}, DType::F32, dev);
  be.unary(UnaryOp::ClipCoef, norm, coef, max_norm);
  be.scale_multi(write, coef);
  return norm;
}

}  // namespace mokd
