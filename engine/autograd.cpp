#include "engine/autograd.h"

#include <algorithm>

#include <unordered_map>
#include <unordered_set>

#include "engine/backend.h"
#include "engine/error.h"

namespace mokd {

namespace {
thread_local bool g_grad_enabled = true;
}

bool grad_enabled() { return g_grad_enabled; }

NoGrad::NoGrad() : prev_(g_grad_enabled) { g_grad_enabled = false; }
NoGrad::~NoGrad() { g_grad_enabled = prev_; }

namespace {
thread_local LeafReadyHook::Fn g_leaf_ready;
}  // namespace

LeafReadyHook::LeafReadyHook(Fn ready) : prev_(std::move(g_leaf_ready)) {
  g_leaf_ready = std::move(ready);
}
LeafReadyHook::~LeafReadyHook() { g_leaf_ready = std::move(prev_); }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const char* name, Tensor& out, const std::vector<Tensor>& inputs, BackwardFn fn) {
  auto node = std::make_shared<Node>();
  node->name = name;
  node->inputs.reserve(inputs.size());
  for (const Tensor& t : inputs) {
    Edge e;
    if (t.defined() && t.requires_grad()) {
      if (t.impl()->grad_fn)
        e.node = t.impl()->grad_fn;
      else
        e.leaf = t.impl_ptr();
      e.shape = t.shape();
      e.dtype = t.dtype();
    }
    node->inputs.push_back(std::move(e));
  }
  node->backward = std::move(fn);
  out.impl()->requires_grad = true;
  out.impl()->grad_fn = std::move(node);
}

Tensor sum_to_shape(const Tensor& grad, const Shape& to) {
  return sum_to_shape(grad, to, grad.dtype());
}

Tensor sum_to_shape(const Tensor& grad, const Shape& to, DType dtype) {
  if (grad.shape() == to) return grad;
  const Shape& from = grad.shape();
  MOKD_CHECK(from.size() >= to.size(), "sum_to_shape: cannot reduce ", shape_str(from), " to ",
             shape_str(to));
  size_t lead = from.size() - to.size();
  Shape keep(from.size(), 1);  // keepdim shape of the reduction
  for (size_t i = 0; i < to.size(); ++i) {
    MOKD_CHECK(to[i] == from[lead + i] || to[i] == 1, "sum_to_shape: cannot reduce ",
               shape_str(from), " to ", shape_str(to));
    keep[lead + i] = to[i];
  }
  Tensor g = grad.contiguous();
  Tensor out = Tensor::empty(keep, dtype, g.device());
  backend_for(g).reduce_sum(g, out, 1.f);
  return out.view(to);
}

// g (held once, by its caller's list) is the only tensor on its memory, a whole fresh buffer: a
// slot may take it over and accumulate into it in place, as nothing else can see the writes.
static bool sole_owner_of_its_memory(const Tensor& g) {
  const std::shared_ptr<TensorImpl>& impl = g.impl_ptr();
  return impl.use_count() == 1 && impl->storage.use_count() == 1 && impl->offset == 0 &&
         !impl->grad_fn && !impl->requires_grad && g.is_contiguous() &&
         impl->storage->nbytes() == g.nbytes();
}

// Accumulates g into the gradient slot for impl (a leaf's .grad or a pending map entry).
static void accumulate(std::shared_ptr<TensorImpl>& slot, const Tensor& g) {
  if (!slot) {
    // The slot owns its memory: a gradient that shares memory with anything else (a saved tensor,
    // another input's gradient, a view) is copied, a fresh one is taken over (no copy).
    slot = sole_owner_of_its_memory(g) ? g.impl_ptr() : g.contiguous().clone().impl_ptr();
    return;
  }
  Tensor acc(slot);
  MOKD_CHECK(acc.shape() == g.shape(), "backward: gradient of shape ", shape_str(g.shape()),
             " does not match ", shape_str(acc.shape()));
  backend_for(acc).binary(BinaryOp::Add, acc, g, acc);
}

void Tensor::backward(bool retain_graph) const {
  MOKD_CHECK(defined() && numel() == 1, "backward: needs a one-element tensor, got ",
             defined() ? str() : std::string("undefined"));
  MOKD_CHECK(requires_grad(), "backward: ", str(),
             " does not require grad (no input needed it, or it was made under NoGrad)");
  Tensor seed = Tensor::ones(shape(), dtype(), device());
  if (!impl()->grad_fn) {  // a leaf: d self / d self
    accumulate(impl()->grad, seed);
    if (g_leaf_ready) g_leaf_ready(impl_ptr());
    return;
  }

  // Reverse topological order of the nodes reachable from this tensor (iterative DFS).
  Node* root = impl()->grad_fn.get();
  std::vector<Node*> order;
  std::unordered_set<Node*> visited{root};
  std::vector<std::pair<Node*, size_t>> stack{{root, 0}};
  while (!stack.empty()) {
    auto& [n, next] = stack.back();
    if (next < n->inputs.size()) {
      Node* in = n->inputs[next++].node.get();
      if (in && visited.insert(in).second) stack.push_back({in, 0});
    } else {
      order.push_back(n);
      stack.pop_back();
    }
  }

  // With a LeafReadyHook: the last node (in processing order) feeding each leaf, so the hook
  // fires once that node has run.
  std::unordered_map<Node*, std::vector<std::shared_ptr<TensorImpl>>> finishes;
  if (g_leaf_ready) {
    std::unordered_map<TensorImpl*, Node*> last;
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      for (const Edge& e : (*it)->inputs)
        if (e.leaf) last[e.leaf.get()] = *it;
    for (auto it = order.rbegin(); it != order.rend(); ++it)
      for (const Edge& e : (*it)->inputs)
        if (e.leaf && last[e.leaf.get()] == *it) {
          auto& f = finishes[*it];
          if (std::find(f.begin(), f.end(), e.leaf) == f.end()) f.push_back(e.leaf);
        }
  }
  auto finish = [&](Node* node) {
    auto f = finishes.find(node);
    if (f == finishes.end()) return;
    for (const auto& leaf : f->second) g_leaf_ready(leaf);
  };

  std::unordered_map<Node*, std::shared_ptr<TensorImpl>> pending;
  pending[root] = seed.impl_ptr();
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    Node* node = *it;
    auto found = pending.find(node);
    if (found == pending.end()) {  // no gradient reached it
      finish(node);
      continue;
    }
    Tensor gout(found->second);
    pending.erase(found);
    MOKD_CHECK(node->backward, "backward: trying to backward through the graph a second time (op '",
               node->name,
               "'): its saved tensors were freed; pass retain_graph=true to the first backward");
    std::vector<Tensor> grads = node->backward(gout);
    gout = Tensor();
    MOKD_CHECK(grads.size() == node->inputs.size(), "backward: op '", node->name, "' returned ",
               grads.size(), " gradients for ", node->inputs.size(), " inputs");
    for (size_t i = 0; i < grads.size(); ++i) {
      Edge& e = node->inputs[i];
      if (!e.active() || !grads[i].defined()) continue;
      MOKD_CHECK(grads[i].shape() == e.shape, "backward: op '", node->name, "' gave a gradient ",
                 shape_str(grads[i].shape()), " for input ", i, " of shape ", shape_str(e.shape));
      // A gradient has its input's dtype: bf16 for bf16 activations, f32 for f32 parameters
      // (engine/precision.h). Ops write it so; this conversion covers one that does not.
      if (grads[i].dtype() != e.dtype) grads[i] = grads[i].to(e.dtype);
      if (e.node)
        accumulate(pending[e.node.get()], grads[i]);
      else
        accumulate(e.leaf->grad, grads[i]);
    }
    if (!retain_graph) node->backward = nullptr;  // frees the saved tensors now
    finish(node);
  }
}

}  // namespace mokd
