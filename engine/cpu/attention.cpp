// CPU scaled-dot-product attention (non-causal) and its backward, one (batch, head) per task.
// f32 only: under MatmulPrecision::BF16 engine/ops/attention.cpp does not call these kernels; it
// runs batched bf16 Backend::gemm products around an f32 Backend::softmax (and softmax_backward).
#include <cmath>
#include <limits>

#include <Eigen/Core>

#include "engine/cpu/cpu_backend.h"
#include "engine/kernel_costs.h"

namespace mokd {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using ConstMap = Eigen::Map<const RowMat>;
using MutMap = Eigen::Map<RowMat>;
using ColVec = Eigen::Matrix<float, Eigen::Dynamic, 1>;

}  // namespace

void CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, float scale,
                           Tensor& out, Tensor& lse) {
  const AttnDims a = attention_args(DeviceType::CPU, q, k, v, out, lse);
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  float* po = out.data<float>();
  float* pl = lse.data<float>();
  if (a.nk == 0) {         // softmax over nothing: no output, lse = log(0)
    NestedKernels nested;  // part of this call (noted already)
    out.fill_(0.0);
    lse.fill_(-std::numeric_limits<double>::infinity());
    return;
  }
#pragma omp parallel
  {
    RowMat s(a.nq, a.nk);  // scores, then probabilities; per thread
    ColVec m(a.nq), l(a.nq);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < a.bh; ++i) {
      ConstMap Q(pq + i * a.nq * a.d, a.nq, a.d);
      ConstMap K(pk + i * a.nk * a.d, a.nk, a.d);
      ConstMap V(pv + i * a.nk * a.dv, a.nk, a.dv);
      MutMap O(po + i * a.nq * a.dv, a.nq, a.dv);
      s.noalias() = scale * (Q * K.transpose());
      // Row softmax, max-subtracted so exp never overflows; lse = max + log(sum exp(s - max)).
      m = s.rowwise().maxCoeff();
      s.array().colwise() -= m.array();
      s = s.array().exp();
      l = s.rowwise().sum();
      for (int64_t r = 0; r < a.nq; ++r) pl[i * a.nq + r] = m(r) + std::log(l(r));
      s.array().colwise() /= l.array();
      O.noalias() = s * V;
    }
  }
}

void CpuBackend::attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const Tensor& out, const Tensor& lse, const Tensor& gout,
                                    float scale, Tensor& gq, Tensor& gk, Tensor& gv) {
  const AttnDims a = attention_backward_args(DeviceType::CPU, q, k, v, out, lse, gout, gq, gk, gv);
  const float* pq = q.data<float>();
  const float* pk = k.data<float>();
  const float* pv = v.data<float>();
  const float* po = out.data<float>();
  const float* pl = lse.data<float>();
  const float* pg = gout.data<float>();
  float* pgq = gq.data<float>();
  float* pgk = gk.data<float>();
  float* pgv = gv.data<float>();
  if (a.nk == 0) {
    NestedKernels nested;  // part of this call (noted already)
    gq.fill_(0.0);
    return;
  }
#pragma omp parallel
  {
    RowMat p(a.nq, a.nk), dp(a.nq, a.nk);
    ColVec delta(a.nq);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < a.bh; ++i) {
      ConstMap Q(pq + i * a.nq * a.d, a.nq, a.d);
      ConstMap K(pk + i * a.nk * a.d, a.nk, a.d);
      ConstMap V(pv + i * a.nk * a.dv, a.nk, a.dv);
      ConstMap O(po + i * a.nq * a.dv, a.nq, a.dv);
      ConstMap G(pg + i * a.nq * a.dv, a.nq, a.dv);
      Eigen::Map<const ColVec> L(pl + i * a.nq, a.nq);
      MutMap GQ(pgq + i * a.nq * a.d, a.nq, a.d);
      MutMap GK(pgk + i * a.nk * a.d, a.nk, a.d);
      MutMap GV(pgv + i * a.nk * a.dv, a.nk, a.dv);
      // Recompute P = exp(scale q k^T - lse) instead of storing it (flash-attention style).
      p.noalias() = scale * (Q * K.transpose());
      p.array().colwise() -= L.array();
      p = p.array().exp();
      GV.noalias() = p.transpose() * G;
      dp.noalias() = G * V.transpose();
      // softmax backward: dS = P * (dP - rowsum(dP * P)), and rowsum(dP * P) = rowsum(gout * out).
      delta = (G.array() * O.array()).rowwise().sum();
      dp.array().colwise() -= delta.array();
      dp.array() *= p.array();
      GQ.noalias() = scale * (dp * K);
      GK.noalias() = scale * (dp.transpose() * Q);
    }
  }
}

}  // namespace mokd
