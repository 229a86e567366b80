// Reverse-mode autograd over a dynamic tape.
//
// An op that has an input requiring grad (and grad mode on) gives its output a Node: the op's
// name, the inputs it routes gradients to, and a backward function that captured what it saved.
// Tensor::backward() visits nodes in reverse topological order, adds gradients into leaf .grad,
// and drops each node's backward function (with its saved tensors) once it has run.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace mokd {

// Given the gradient of the output, the gradients of the inputs, in order (an undefined Tensor
// for an input that needs none).
using BackwardFn = std::function<std::vector<Tensor>(const Tensor& grad_out)>;

// Where an input's gradient goes: the node that made it, or (for a leaf) its .grad. Edges hold
// nodes, not the inputs' data, so activations are freed as soon as no saved tensor needs them.
struct Edge {
  std::shared_ptr<Node> node;        // non-leaf input
  std::shared_ptr<TensorImpl> leaf;  // leaf input that requires grad
  Shape shape;                       // the input's shape (checked against its gradient)
  DType dtype = DType::F32;          // the input's dtype (a gradient of another one is converted)
  bool active() const { return node || leaf; }
};

struct Node {
  const char* name = "";
  std::vector<Edge> inputs;
  BackwardFn backward;  // reset after it runs, unless retain_graph
};

bool grad_enabled();

// Scope in which no op records a node (teacher forward, evaluation, the FAMO re-forward).
class NoGrad {
 public:
  NoGrad();
  ~NoGrad();
  NoGrad(const NoGrad&) = delete;
  NoGrad& operator=(const NoGrad&) = delete;

 private:
  bool prev_;
};

// Scope in which every Tensor::backward() of this thread calls `ready(leaf)` once for each leaf it
// reaches, as soon as the leaf's .grad has received its last contribution of that backward (when
// the last node feeding it has run), in the order backward finishes them. What data-parallel
// training uses to reduce a bucket of gradients while backward still runs (mokd/grad_sync.h).
class LeafReadyHook {
 public:
  using Fn = std::function<void(const std::shared_ptr<TensorImpl>& leaf)>;
  explicit LeafReadyHook(Fn ready);
  ~LeafReadyHook();
  LeafReadyHook(const LeafReadyHook&) = delete;
  LeafReadyHook& operator=(const LeafReadyHook&) = delete;

 private:
  Fn prev_;
};

// True when grad mode is on and some input requires grad: the op should then call record().
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Attaches a node to `out` (which must be fresh: not a leaf with requires_grad set by a user).
// `inputs` are the op's differentiable inputs, in the order fn returns their gradients.
// Call only when needs_grad(...) is true. Saved tensors captured by fn should be detach()ed.
void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn);

// Gradient of a broadcast result with shape `from` reduced back to an input of shape `to`
// (sums over broadcast dims). Used by elementwise backward functions.
Tensor sum_to_shape(const Tensor& grad, const Shape& to);
// The same, with a reduced result stored as `dtype` (f32 for an f32 parameter's gradient summed
// from a bf16 activation's); an unreduced grad is returned as it is.
Tensor sum_to_shape(const Tensor& grad, const Shape& to, DType dtype);

}  // namespace mokd
