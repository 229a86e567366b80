// Projectors that map the student's pooled feature z_s [B, d_s] into the teacher's space
// (docs/method.md, "Projector"). Both keep their Stiefel factors on the manifold for the whole run:
// call retract() after every optimizer step.
//
//  - StiefelProjector: P [d_t, d_s] (stored like nn.Linear's weight, y = z_s P^T) with orthonormal
//    columns (P^T P = I) when d_s <= d_t, orthonormal rows (P P^T = I) when d_s > d_t.
//  - BilinearProjector: U in St(d_t, k), V in St(d_s, k), a diagonal metric D = d / sum|d| (fixed
//    scale, entries may be negative) and the bounded loss
//      L = mean_b [1 - sum_k D_k (U^T u_t)_k (V^T u_s)_k],  u = unit-normalised features,
//    which lies in [0, 2] (|sum_k D_k a_k b_k| <= max_k |a_k b_k| <= 1).
//
// The retraction is the polar factor (the nearest matrix with orthonormal columns), computed
// with Newton-Schulz iterations X <- X (3 I - X^T X) / 2 from X / ||X||_F: only matrix products,
// so it runs on whichever device holds the parameter, with no host synchronisation.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "engine/ops.h"
#include "io/state.h"

namespace mokd {

// Replaces m (rank 2) by the polar factor of m (or of m^T when m is wide), in place.
void retract_to_stiefel(Tensor& m, int iterations = 24);

// max |M^T M - I| (tall) or |M M^T - I| (wide): the distance from the manifold, for tests/logs.
float stiefel_error(const Tensor& m);

class StiefelProjector {
 public:
  StiefelProjector(int64_t student_dim, int64_t teacher_dim, Generator& gen,
                   Device dev = Device::cpu());
  Tensor forward(const Tensor& z_s) const;  // [B, d_s] -> [B, d_t]
  void retract() { retract_to_stiefel(weight_); }
  Tensor& weight() { return weight_; }
  std::vector<std::pair<std::string, Tensor>> named_parameters() const {
    return {{"weight", weight_}};
  }
  // Checkpoint state: tensor "weight". load_state() copies it in (shape checked).
  io::State state() const;
  void load_state(const io::State& s);

 private:
  Tensor weight_;  // [d_t, d_s]
};

class BilinearProjector {
 public:
  BilinearProjector(int64_t student_dim, int64_t teacher_dim, int64_t rank, Generator& gen,
                    Device dev = Device::cpu());
  // The bounded loss in [0, 2] between student and teacher features [B, d_s], [B, d_t].
  Tensor loss(const Tensor& z_s, const Tensor& z_t) const;
  void retract();
  Tensor metric() const;  // D = d / sum |d|
  std::vector<std::pair<std::string, Tensor>> named_parameters() const {
    return {{"u", u_}, {"v", v_}, {"d", d_}};
  }
  // Checkpoint state: tensors "u", "v", "d". load_state() copies them in (shapes checked).
  io::State state() const;
  void load_state(const io::State& s);

 private:
  Tensor u_, v_, d_;  // [d_t, k], [d_s, k], [k]
};

}  // namespace mokd
