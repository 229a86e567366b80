#include "mokd/projector.h"

#include <cmath>

#include "engine/precision.h"

namespace mokd {

void retract_to_stiefel(Tensor& m, int iterations) {
  MOKD_CHECK(m.dim() == 2, "retract_to_stiefel: needs a matrix, got ", m.str());
  NoGrad ng;
  ScopedPrecision f32(MatmulPrecision::F32);  // the weight's manifold, to f32 accuracy
  bool wide = m.size(0) < m.size(1);
  Tensor x = wide ? transpose(m, 0, 1) : m.contiguous().clone();  // tall: [n, k], n >= k
  int64_t k = x.size(1);
  x = div(x, sqrt(sum(square(x))));  // all singular values now in (0, 1]
  Tensor eye3 = Tensor::zeros({k, k}, DType::F32, m.device());
  {
    std::vector<float> e(k * k, 0.f);
    for (int64_t i = 0; i < k; ++i) e[i * k + i] = 3.f;
    eye3.copy_(Tensor::from_vector(e, {k, k}));
  }
  for (int it = 0; it < iterations; ++it) {
    Tensor gram = matmul(transpose(x, 0, 1), x);  // X^T X  [k, k]
    x = scale(matmul(x, sub(eye3, gram)), 0.5f);  // X (3I - X^T X) / 2
  }
  m.copy_(wide ? transpose(x, 0, 1) : x);
}

float stiefel_error(const Tensor& m) {
  NoGrad ng;
  ScopedPrecision f32(MatmulPrecision::F32);
  bool wide = m.size(0) < m.size(1);
  Tensor x = wide ? transpose(m, 0, 1) : m;
  Tensor gram = matmul(transpose(x, 0, 1), x);
  auto g = gram.to_vector();
  int64_t k = x.size(1);
  float worst = 0.f;
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j)
      worst = std::max(worst, std::fabs(g[i * k + j] - (i == j ? 1.f : 0.f)));
  return worst;
}

StiefelProjector::StiefelProjector(int64_t student_dim, int64_t teacher_dim, Generator& gen,
                                   Device dev) {
  MOKD_CHECK(student_dim > 0 && teacher_dim > 0,
             "stiefel projector: dims must be > 0, got student ", student_dim, " teacher ",
             teacher_dim);
  weight_ = Tensor::empty({teacher_dim, student_dim}, DType::F32, dev);
  normal_(weight_, 0.f, 1.f, gen);
  retract();  // a random point of the manifold
  weight_.set_requires_grad(true);
}

Tensor StiefelProjector::forward(const Tensor& z_s) const {
  MOKD_CHECK(z_s.dim() == 2 && z_s.size(1) == weight_.size(1),
             "stiefel projector: student feature ", z_s.str(),
             " does not match the projector's student dim ", weight_.size(1));
  return linear(z_s, weight_, Tensor());
}

BilinearProjector::BilinearProjector(int64_t student_dim, int64_t teacher_dim, int64_t rank,
                                     Generator& gen, Device dev) {
  MOKD_CHECK(rank > 0 && rank <= student_dim && rank <= teacher_dim, "bilinear projector: rank ",
             rank, " must be in [1, min(student dim ", student_dim, ", teacher dim ", teacher_dim,
             ")]");
  u_ = Tensor::empty({teacher_dim, rank}, DType::F32, dev);
  v_ = Tensor::empty({student_dim, rank}, DType::F32, dev);
  normal_(u_, 0.f, 1.f, gen);
  normal_(v_, 0.f, 1.f, gen);
  retract();
  d_ = Tensor::full({rank}, 1.0 / static_cast<double>(rank), DType::F32, dev);  // D = I / k
  u_.set_requires_grad(true);
  v_.set_requires_grad(true);
  d_.set_requires_grad(true);
}

void BilinearProjector::retract() {
  retract_to_stiefel(u_);
  retract_to_stiefel(v_);
}

Tensor BilinearProjector::metric() const { return div(d_, add_scalar(sum(abs(d_)), 1e-12f)); }

static Tensor unit_rows(const Tensor& x) {
  return div(x, sqrt(add_scalar(sum(square(x), {1}, true), 1e-12f)));
}

Tensor BilinearProjector::loss(const Tensor& z_s, const Tensor& z_t) const {
  MOKD_CHECK(z_s.dim() == 2 && z_t.dim() == 2 && z_s.size(0) == z_t.size(0) &&
                 z_s.size(1) == v_.size(0) && z_t.size(1) == u_.size(0),
             "bilinear projector: features ", z_s.str(), " (student) and ", z_t.str(),
             " (teacher) do not match dims ", v_.size(0), " and ", u_.size(0));
  // A loss computes in f32: the products' bf16 results (in the bf16 mode) are widened first.
  Tensor a = cast(matmul(unit_rows(z_t), u_), DType::F32);  // [B, k]
  Tensor b = cast(matmul(unit_rows(z_s), v_), DType::F32);  // [B, k]
  Tensor sim = sum(mul(mul(a, b), metric()), {1});          // [B]
  return mean(sub(Tensor::ones({}, DType::F32, z_s.device()), sim));
}

io::State StiefelProjector::state() const {
  io::State s;
  s.tensors["weight"] = weight_;
  return s;
}

void StiefelProjector::load_state(const io::State& s) {
  weight_.copy_(s.tensor("weight", weight_.shape(), "stiefel projector"));
}

io::State BilinearProjector::state() const {
  io::State s;
  s.tensors = {{"u", u_}, {"v", v_}, {"d", d_}};
  return s;
}

void BilinearProjector::load_state(const io::State& s) {
  const Tensor& u = s.tensor("u", u_.shape(), "bilinear projector");
  const Tensor& v = s.tensor("v", v_.shape(), "bilinear projector");
  const Tensor& d = s.tensor("d", d_.shape(), "bilinear projector");
  u_.copy_(u);
  v_.copy_(v);
  d_.copy_(d);
}

}  // namespace mokd
