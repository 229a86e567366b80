// Exponential moving average of a model's parameters (optim.ema_decay), evaluated next to the
// trained weights.
//
// What it averages: the parameters only (Module::named_parameters), not the buffers. update()
// sets ema = decay * ema + (1 - decay) * parameter after each step; with_averages() evaluates the
// model with its parameters replaced by the averages and its buffers (batch-norm running
// statistics) as they are in the trained model. That matches timm's ModelEmaV3 with
// exclude_buffers=True (parameters averaged, buffers copied); timm's ModelEmaV2 instead averages
// every state_dict entry, buffers included.
#pragma once
#include <utility>
#include <vector>

#include "io/state.h"
#include "models/model.h"

namespace mokd {

class Ema {
 public:
  // Starts the averages as copies of the model's current parameters. The model must outlive this.
  Ema(Model& model, float decay);

  void update();

  // Runs fn() with the model's parameters set to the averages, then puts the trained values back
  // (also when fn throws) and returns what fn returned.
  template <class F>
  auto with_averages(F&& fn) {
    swap_in();
    struct Restore {
      Ema* e;
      ~Restore() { e->swap_out(); }
    } restore{this};
    return fn();
  }

  // Checkpoint state: one tensor per parameter, by its name. load_state() copies them in (shapes
  // checked) and throws naming a missing one.
  io::State state() const;
  void load_state(const io::State& s);

 private:
  void swap_in();   // parameters <- averages, keeping the trained values aside
  void swap_out();  // parameters <- the trained values kept aside

  Model& model_;
  float decay_;
  nn::NamedTensors avg_;       // same order as model_.named_parameters()
  std::vector<Tensor> saved_;  // the trained values while swapped in
};

}  // namespace mokd
