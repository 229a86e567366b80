#include "mokd/famo.h"

#include <cmath>

namespace mokd {

Famo::Famo(std::vector<std::string> names, const FamoConfig& cfg, Device dev)
    : names_(std::move(names)), cfg_(cfg) {
  MOKD_CHECK(!names_.empty(), "famo: needs at least one objective");
  MOKD_CHECK(cfg.lr > 0.f, "famo: lr must be > 0, got ", cfg.lr);
  MOKD_CHECK(cfg.weight_decay >= 0.f, "famo: weight_decay must be >= 0, got ", cfg.weight_decay);
  MOKD_CHECK(cfg.eps > 0.f, "famo: eps must be > 0, got ", cfg.eps);
  MOKD_CHECK(cfg.beta1 >= 0.f && cfg.beta1 < 1.f && cfg.beta2 >= 0.f && cfg.beta2 < 1.f,
             "famo: betas must lie in [0, 1), got ", cfg.beta1, ", ", cfg.beta2);
  int64_t k = static_cast<int64_t>(names_.size());
  w_ = Tensor::zeros({k}, DType::F32, dev);
  m_ = Tensor::zeros({k}, DType::F32, dev);
  v_ = Tensor::zeros({k}, DType::F32, dev);
  min_losses_ = Tensor::zeros({k}, DType::F32, dev);
}

Tensor Famo::weights() const {
  NoGrad ng;
  return softmax(w_, 0);
}

void Famo::set_min_losses(const Tensor& min_losses) {
  MOKD_CHECK(min_losses.shape() == w_.shape(), "famo: min_losses ", min_losses.str(),
             " must have shape ", shape_str(w_.shape()));
  min_losses_ = min_losses.to(w_.device()).to(DType::F32).clone();
}

Tensor Famo::stack_losses(const std::vector<Tensor>& losses, const char* what, bool check) const {
  MOKD_CHECK(losses.size() == names_.size(), "famo ", what, ": got ", losses.size(), " losses for ",
             names_.size(), " objectives");
  std::vector<Tensor> parts;
  for (size_t i = 0; i < losses.size(); ++i) {
    MOKD_CHECK(losses[i].defined() && losses[i].numel() == 1, "famo ", what, ": loss '", names_[i],
               "' must be a scalar, got ",
               losses[i].defined() ? losses[i].str() : std::string("undefined"));
    parts.push_back(reshape(losses[i], {1}));
  }
  Tensor l = concat(parts, 0);
  if (cfg_.check_positive && check) {
    // log(L - L* + eps) needs a positive argument: name the objective instead of making a NaN.
    Tensor d = add_scalar(sub(l.detach(), min_losses_), cfg_.eps);
    auto v = d.to_vector();
    for (size_t i = 0; i < v.size(); ++i)
      MOKD_CHECK(std::isfinite(v[i]) && v[i] > 0.f, "famo ", what, ": objective '", names_[i],
                 "' has loss - min_loss + eps = ", v[i],
                 "; FAMO takes its logarithm and needs it finite and > 0");
  }
  return l;
}

Tensor Famo::weighted_loss(const std::vector<Tensor>& losses, bool check) {
  Tensor l = stack_losses(losses, "weighted_loss", check);
  Tensor zc;
  {
    NoGrad ng;
    prev_ = l.detach().clone();
    Tensor z = softmax(w_, 0);
    Tensor inv_d = div(z, add_scalar(sub(prev_, min_losses_), cfg_.eps));  // z_i / D_i
    Tensor c = sum(inv_d);
    zc = div(z, c);           // z_i / c
    last_a_ = div(inv_d, c);  // a_i
  }
  Tensor d = add_scalar(sub(l, min_losses_), cfg_.eps);
  return sum(mul(log(d), zc));
}

void Famo::update(const std::vector<Tensor>& after) {
  MOKD_CHECK(prev_.defined(), "famo update: call weighted_loss() first on this step");
  NoGrad ng;
  Tensor cur = stack_losses(after, "update");
  update(prev_, cur);
}

Tensor Famo::margin(const Tensor& losses) const {
  NoGrad ng;
  MOKD_CHECK(losses.shape() == w_.shape(), "famo margin: losses ", losses.str(),
             " must have shape ", shape_str(w_.shape()));
  return add_scalar(sub(losses.detach(), min_losses_), cfg_.eps);
}

void Famo::update(const Tensor& before, const Tensor& after, bool check) {
  NoGrad ng;
  MOKD_CHECK(before.shape() == w_.shape() && after.shape() == w_.shape(),
             "famo update: losses before ", before.str(), " and after ", after.str(),
             " must have shape ", shape_str(w_.shape()));
  const Tensor prev = before.detach(), cur = after.detach();
  if (cfg_.check_positive && check) {
    Tensor d = add_scalar(sub(cur, min_losses_), cfg_.eps);
    auto v = d.to_vector();
    for (size_t i = 0; i < v.size(); ++i)
      MOKD_CHECK(std::isfinite(v[i]) && v[i] > 0.f, "famo update: objective '", names_[i],
                 "' has loss - min_loss + eps = ", v[i],
                 "; FAMO takes its logarithm and needs it finite and > 0");
  }
  Tensor delta = sub(log(add_scalar(sub(prev, min_losses_), cfg_.eps)),
                     log(add_scalar(sub(cur, min_losses_), cfg_.eps)));
  Tensor z = softmax(w_, 0);
  // Softmax Jacobian-vector product: J^T delta with J = diag(z) - z z^T.
  Tensor grad_w = mul(z, sub(delta, sum(mul(z, delta))));
  AdamHyper h;
  h.lr = cfg_.lr;
  h.beta1 = cfg_.beta1;
  h.beta2 = cfg_.beta2;
  h.eps = cfg_.adam_eps;
  h.weight_decay = cfg_.weight_decay;
  h.decoupled = false;  // torch.optim.Adam(weight_decay=gamma), as the official code
  h.step = ++step_;
  backend_for(w_).adam_update(w_, grad_w, m_, v_, h);
  prev_ = Tensor();
}

io::State Famo::state() const {
  io::State s;
  s.tensors = {{"w", w_}, {"m", m_}, {"v", v_}};
  s.counters["step"] = step_;
  return s;
}

void Famo::load_state(const io::State& s) {
  const Tensor& w = s.tensor("w", w_.shape(), "famo");
  const Tensor& m = s.tensor("m", m_.shape(), "famo");
  const Tensor& v = s.tensor("v", v_.shape(), "famo");
  int64_t step = s.counter("step", "famo");
  MOKD_CHECK(step >= 0, "famo: the checkpoint's step must be >= 0, got ", step);
  w_.copy_(w);
  m_.copy_(m);
  v_.copy_(v);
  step_ = step;
}

}  // namespace mokd
