#include "mokd/ema.h"

#include "engine/ops.h"

namespace mokd {

Ema::Ema(Model& model, float decay) : model_(model), decay_(decay) {
  NoGrad ng;
  for (auto& [n, t] : model_.named_parameters()) avg_.push_back({n, t.detach().clone()});
}

void Ema::update() {
  NoGrad ng;
  auto params = model_.named_parameters();
  for (size_t i = 0; i < avg_.size(); ++i) {
    Tensor mixed =
        add(scale(avg_[i].second, decay_), scale(params[i].second.detach(), 1.f - decay_));
    avg_[i].second.copy_(mixed);
  }
}

void Ema::swap_in() {
  NoGrad ng;
  auto params = model_.named_parameters();
  saved_.clear();
  for (size_t i = 0; i < params.size(); ++i) {
    saved_.push_back(params[i].second.detach().clone());
    Tensor p = params[i].second;
    p.copy_(avg_[i].second);
  }
}

void Ema::swap_out() {
  NoGrad ng;
  auto params = model_.named_parameters();
  for (size_t i = 0; i < params.size() && i < saved_.size(); ++i) {
    Tensor p = params[i].second;
    p.copy_(saved_[i]);
  }
  saved_.clear();
}

io::State Ema::state() const {
  io::State s;
  for (auto& [n, t] : avg_) s.tensors[n] = t;
  return s;
}

void Ema::load_state(const io::State& s) {
  for (auto& [n, t] : avg_) t.copy_(s.tensor(n, t.shape(), "ema"));
}

}  // namespace mokd
