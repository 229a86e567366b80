#include "mokd/step_stats.h"

#include <cmath>

#include "engine/ops.h"

namespace mokd {

namespace {

std::string fmt(float v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
  return buf;
}

// Fills the host fields of `st` from its pending values, read into `v`.
void unpack(StepStats& st, const float* v) {
  const size_t K = st.names.size();
  size_t at = 0;
  auto take = [&](size_t n) {
    std::vector<float> out(v + at, v + at + n);
    at += n;
    return out;
  };
  st.losses = take(K);
  st.total = v[at++];
  st.grad_norm = v[at++];
  if (st.layout.weights > 0) st.weights = take(static_cast<size_t>(st.layout.weights));
  if (st.layout.after > 0) st.losses_after = take(static_cast<size_t>(st.layout.after));
  if (st.layout.margins > 0) {
    st.famo_margin_before = take(static_cast<size_t>(st.layout.margins));
    st.famo_margin_after = take(static_cast<size_t>(st.layout.margins));
  }
  st.grad_cosine.clear();
  st.grad_norm_ratio.clear();
  for (int64_t p = 0; p < st.layout.diag_pairs; ++p) {
    st.grad_cosine.push_back(v[at++]);
    st.grad_norm_ratio.push_back(v[at++]);
  }
  st.pending = Tensor();
}

int64_t pending_size(const StepStats& st) {
  const StepStats::Layout& l = st.layout;
  return static_cast<int64_t>(st.names.size()) + 2 + l.weights + l.after + 2 * l.margins +
         2 * l.diag_pairs;
}

}  // namespace

void set_pending(StepStats& st, const Tensor& losses_and_total, const Tensor& grad_norm,
                 const Tensor& weights, const Tensor& losses_after, const Tensor& margin_before,
                 const Tensor& margin_after, const Tensor& diagnostics) {
  NoGrad ng;
  std::vector<Tensor> parts{reshape(losses_and_total.detach(), {-1}),
                            reshape(grad_norm.detach(), {1})};
  st.layout = {};
  auto add = [&](const Tensor& t, int64_t& count) {
    if (!t.defined()) return;
    parts.push_back(reshape(t.detach(), {-1}));
    count = t.numel();
  };
  add(weights, st.layout.weights);
  add(losses_after, st.layout.after);
  add(margin_before, st.layout.margins);
  int64_t margins_after = 0;
  add(margin_after, margins_after);
  MOKD_CHECK(margins_after == st.layout.margins, "step stats: ", st.layout.margins,
             " FAMO margins before the update but ", margins_after, " after");
  int64_t diag = 0;
  add(diagnostics, diag);
  MOKD_CHECK(diag % 2 == 0, "step stats: diagnostics hold (cos, ratio) pairs, got ", diag,
             " values");
  st.layout.diag_pairs = diag / 2;
  st.pending = concat(parts, 0).to(DType::F32);
  MOKD_CHECK(st.pending.numel() == pending_size(st), "step stats: ", st.pending.numel(),
             " values for ", st.names.size(), " objectives and the parts counted");
}

void StepStats::read() {
  if (is_read()) return;
  read_steps({this});
}

void read_steps(const std::vector<StepStats*>& steps) {
  std::vector<Tensor> parts;
  for (StepStats* s : steps)
    if (!s->is_read()) parts.push_back(s->pending);
  if (parts.empty()) return;
  const std::vector<float> v = concat(parts, 0).to_vector();  // the one host read
  size_t at = 0;
  for (StepStats* s : steps) {
    if (s->is_read()) continue;
    const size_t n = static_cast<size_t>(s->pending.numel());
    unpack(*s, v.data() + at);
    at += n;
  }
}

std::string StepStats::problem() const {
  MOKD_CHECK(is_read(), "step stats: problem() needs the values read first");
  for (size_t i = 0; i < losses.size(); ++i)
    if (!std::isfinite(losses[i]))
      return "objective '" + names[i] + "' is not finite (" + fmt(losses[i]) +
             "); lower the learning rate or check the inputs";
  auto margin = [&](const std::vector<float>& m, const char* when) -> std::string {
    for (size_t i = 0; i < m.size(); ++i)
      if (!(std::isfinite(m[i]) && m[i] > 0.f))
        return std::string("famo ") + when + ": objective '" + names[i] +
               "' has loss - min_loss + eps = " + fmt(m[i]) +
               "; FAMO takes its logarithm and needs it finite and > 0";
    return "";
  };
  if (std::string p = margin(famo_margin_before, "weighted_loss"); !p.empty()) return p;
  if (!std::isfinite(grad_norm)) return "the gradient norm is not finite";
  for (size_t i = 0; i < losses_after.size(); ++i)
    if (!std::isfinite(losses_after[i]))
      return "objective '" + names[i] + "' is not finite after the update (" +
             fmt(losses_after[i]) + "); lower the learning rate";
  return margin(famo_margin_after, "update");
}

}  // namespace mokd
