#include "mokd/distill.h"

#include <cmath>
#include <limits>

#include "engine/precision.h"
#include "engine/weight_copies.h"

namespace mokd {

Method parse_method(const std::string& s) {
  if (s == "none") return Method::None;
  if (s == "kd") return Method::KD;
  if (s == "deit-hard") return Method::DeitHard;
  if (s == "vkd") return Method::VKD;
  if (s == "mokd") return Method::MoKD;
  MOKD_FAIL("method '", s, "': expected one of none, kd, deit-hard, vkd, mokd");
}

const char* method_name(Method m) {
  switch (m) {
    case Method::None:
      return "none";
    case Method::KD:
      return "kd";
    case Method::DeitHard:
      return "deit-hard";
    case Method::VKD:
      return "vkd";
    case Method::MoKD:
      return "mokd";
  }
  return "?";
}

Weighting parse_weighting(const std::string& s) {
  if (s == "famo") return Weighting::Famo;
  if (s == "fixed") return Weighting::Fixed;
  if (s == "exact2") return Weighting::Exact2;
  MOKD_FAIL("weighting '", s, "': expected one of famo, fixed, exact2");
}

FeatureSource parse_feature_source(const std::string& s) {
  if (s == "auto") return FeatureSource::Auto;
  if (s == "mean_patch") return FeatureSource::MeanPatch;
  if (s == "cls") return FeatureSource::Cls;
  if (s == "dist") return FeatureSource::Dist;
  if (s == "pooled") return FeatureSource::Pooled;
  MOKD_FAIL("feature source '", s, "': expected one of auto, mean_patch, cls, dist, pooled");
}

ProjectorKind parse_projector(const std::string& s) {
  if (s == "stiefel") return ProjectorKind::Stiefel;
  if (s == "bilinear") return ProjectorKind::Bilinear;
  MOKD_FAIL("projector '", s, "': expected stiefel or bilinear");
}

static bool uses_features(const DistillConfig& c) {
  return c.method == Method::VKD || c.method == Method::MoKD;
}

Distiller::Distiller(Model& student, Model& teacher, const DistillConfig& cfg)
    : student_(student), teacher_(teacher), cfg_(cfg) {
  MOKD_CHECK(student.num_classes() == teacher.num_classes(), "distill: student has ",
             student.num_classes(), " classes, teacher ", teacher.num_classes());
  MOKD_CHECK(cfg.temperature > 0.f, "distill.temperature must be > 0, got ", cfg.temperature);
  MOKD_CHECK(cfg.label_smoothing >= 0.f && cfg.label_smoothing < 1.f,
             "distill.label_smoothing must be in [0, 1), got ", cfg.label_smoothing);
  MOKD_CHECK(cfg.kd_alpha >= 0.f && cfg.kd_alpha <= 1.f, "distill.kd_alpha must be in [0, 1], got ",
             cfg.kd_alpha);
  MOKD_CHECK(cfg.diagnostics_every >= 0, "distill.diagnostics_every must be >= 0, got ",
             cfg.diagnostics_every);
  if (cfg.method == Method::MoKD) {
    MOKD_CHECK(cfg.num_objectives == 2 || cfg.num_objectives == 3,
               "distill.num_objectives must be 2 or 3, got ", cfg.num_objectives);
    MOKD_CHECK(cfg.weighting != Weighting::Exact2 || cfg.num_objectives == 2,
               "distill.weighting = exact2 needs num_objectives = 2");
  }
  if (cfg.method == Method::DeitHard)
    MOKD_CHECK(student.has_dist_head(),
               "distill: method deit-hard needs a student with a distillation head (e.g. a "
               "*_distilled model), got ",
               student.name());
  cfg_.num_objectives = static_cast<int>(objective_names().size());
  if (cfg_.weighting == Weighting::Fixed || cfg_.method != Method::MoKD) {
    if (cfg_.fixed_weights.empty()) {
      switch (cfg_.method) {
        case Method::KD:
          cfg_.fixed_weights = {1.f - cfg.kd_alpha, cfg.kd_alpha};
          break;
        case Method::DeitHard:
          cfg_.fixed_weights = {0.5f, 0.5f};
          break;
        default:
          cfg_.fixed_weights.assign(cfg_.num_objectives, 1.f);
      }
    }
    MOKD_CHECK(static_cast<int>(cfg_.fixed_weights.size()) == cfg_.num_objectives,
               "distill.fixed_weights has ", cfg_.fixed_weights.size(), " entries for ",
               cfg_.num_objectives, " objectives");
  }
  Device dev = student.device();
  if (uses_features(cfg_)) {
    Generator gen(cfg.seed, Stream::Init);
    int64_t ds = student.feature_dim(), dt = teacher.feature_dim();
    if (cfg.projector == ProjectorKind::Stiefel) {
      stiefel_ = std::make_unique<StiefelProjector>(ds, dt, gen, dev);
    } else {
      int64_t k = cfg.bilinear_rank > 0 ? cfg.bilinear_rank : std::min(ds, dt);
      bilinear_ = std::make_unique<BilinearProjector>(ds, dt, k, gen, dev);
    }
  }
  if (cfg_.method == Method::MoKD && cfg_.weighting == Weighting::Famo)
    famo_ = std::make_unique<Famo>(objective_names(), cfg.famo, dev);
  teacher_.eval();
}

std::vector<std::string> Distiller::objective_names() const {
  switch (cfg_.method) {
    case Method::None:
      return {"task"};
    case Method::KD:
      return {"task", "kl"};
    case Method::DeitHard:
      return {"task", "hard"};
    case Method::VKD:
      return {"task", "kl", "feat"};
    case Method::MoKD:
      return cfg_.num_objectives == 2 ? std::vector<std::string>{"task", "distill"}
                                      : std::vector<std::string>{"task", "kl", "feat"};
  }
  return {};
}

nn::NamedTensors Distiller::projector_parameters() const {
  nn::NamedTensors out;
  if (stiefel_)
    for (auto& [n, t] : stiefel_->named_parameters()) out.push_back({"projector." + n, t});
  if (bilinear_)
    for (auto& [n, t] : bilinear_->named_parameters()) out.push_back({"projector." + n, t});
  return out;
}

std::vector<Tensor> Distiller::trainable() const {
  std::vector<Tensor> ps = student_.parameters();
  for (auto& [n, t] : projector_parameters()) ps.push_back(t);
  return ps;
}

Tensor Distiller::select_feature(const Features& f, FeatureSource src, const char* who) const {
  Tensor t;
  switch (src) {
    case FeatureSource::Auto:
    case FeatureSource::Pooled:
      t = f.pooled;
      break;
    case FeatureSource::MeanPatch:
      t = f.patch_tokens.defined() ? f.pooled : Tensor();
      break;
    case FeatureSource::Cls:
      t = f.cls;
      break;
    case FeatureSource::Dist:
      t = f.dist;
      break;
  }
  MOKD_CHECK(t.defined(), "distill: the ", who, " model has no such feature (",
             "mean_patch/cls need a ViT, dist a distilled ViT)");
  return t;
}

Distiller::TeacherOut Distiller::teacher_forward(const Tensor& images) {
  NoGrad ng;
  teacher_.eval();
  // The frozen teacher's weights change only when loaded (which drops their copies): in the bf16
  // mode each parameter keeps one bf16 copy, made on the first step
  // (engine/weight_copies.h).
  if (matmul_precision() == MatmulPrecision::BF16)
    for (const auto& [name, p] : teacher_.named_parameters())
      if (can_keep_bf16_copy(p) && !bf16_copy_of(p).defined()) make_bf16_copy(p);
  ModelOutput o = teacher_.forward_train(images);
  TeacherOut t;
  t.logits = o.dist_logits.defined() ? scale(add(o.logits, o.dist_logits), 0.5f) : o.logits;
  if (uses_features(cfg_))
    t.feature = layer_norm(select_feature(o.features, cfg_.teacher_feature, "teacher"), Tensor(),
                           Tensor(), 1e-5f);
  return t;
}

std::vector<Tensor> Distiller::objectives(const ModelOutput& s, const TeacherOut& t,
                                          const Tensor& labels, const Tensor& soft_targets) {
  Tensor task = soft_targets.defined() ? cross_entropy_soft(s.logits, soft_targets)
                                       : cross_entropy(s.logits, labels, cfg_.label_smoothing);
  if (cfg_.method == Method::None) return {task};
  const Tensor& s_dist = s.dist_logits.defined() ? s.dist_logits : s.logits;
  if (cfg_.method == Method::DeitHard) return {task, cross_entropy(s_dist, argmax(t.logits), 0.f)};
  Tensor kl = kl_div(s_dist, t.logits, cfg_.temperature);
  if (cfg_.method == Method::KD) return {task, kl};
  Tensor zs = select_feature(s.features, cfg_.student_feature, "student");
  Tensor feat = stiefel_ ? smooth_l1(stiefel_->forward(zs), t.feature, cfg_.feat_beta)
                         : bilinear_->loss(zs, t.feature);
  if (cfg_.method == Method::MoKD && cfg_.num_objectives == 2) return {task, add(kl, feat)};
  return {task, kl, feat};
}

namespace {

// The current gradients of ps flattened into one vector (zeros where a parameter has none).
Tensor flat_grads(const std::vector<Tensor>& ps) {
  std::vector<Tensor> parts;
  for (const Tensor& p : ps) {
    Tensor g = p.grad();
    parts.push_back(g.defined() ? g.contiguous().view({-1})
                                : Tensor::zeros({p.numel()}, DType::F32, p.device()));
  }
  return concat(parts, 0);
}

void zero_grads(const std::vector<Tensor>& ps) {
  for (const Tensor& p : ps) const_cast<Tensor&>(p).zero_grad();
}

Tensor dot(const Tensor& a, const Tensor& b) { return sum(mul(a, b)); }  // on the device

double dot_on_host(const Tensor& a, const Tensor& b) { return dot(a, b).item(); }

}  // namespace

StepStats Distiller::step(Optimizer& opt, const Tensor& images, const Tensor& labels,
                          const Tensor& soft_targets) {
  MicroBatch m;
  m.images = images;
  m.labels = labels;
  m.soft_targets = soft_targets;
  StepStats st = step(opt, {m}, nullptr);
  st.read();
  const std::string problem = st.problem();
  MOKD_CHECK(problem.empty(), "distill step ", steps_, ": ", problem);
  return st;
}

StepStats Distiller::step(Optimizer& opt, const std::vector<MicroBatch>& micro, GradSync* sync) {
  MOKD_CHECK(!micro.empty(), "distill step: no micro-batch");
  MOKD_CHECK(sync || micro.size() == 1, "distill step: ", micro.size(),
             " micro-batches need a GradSync");
  const bool one = !sync || sync->micro_batches() == 1;
  MOKD_CHECK(one || cfg_.weighting != Weighting::Exact2 || cfg_.method != Method::MoKD,
             "distill.weighting = exact2 needs one micro-batch per step (one process, "
             "optim.accum_steps = 1)");
  ++steps_;
  StepStats st;
  st.names = objective_names();
  const std::vector<Tensor> params = trainable();
  st.diagnostics = cfg_.diagnostics_every > 0 && st.names.size() > 1 &&
                   (steps_ == 1 || steps_ % cfg_.diagnostics_every == 0);

  // Per micro-batch: forward, objectives, backward; the values summed in order over this
  // process's micro-batches. Nothing is read back: the values are checked when the caller reads
  // them (mokd/step_stats.h), on every rank the same, as they are averaged over the ranks.
  std::vector<TeacherOut> teacher_outs;
  std::vector<Tensor> values, diags;  // per micro-batch: [losses..., total], diagnostics
  auto mean_of = [&](const std::vector<Tensor>& v) { return sync ? sync->mean(v) : v[0]; };
  Tensor weights;  // FAMO's z before its update (fixed weights are known on the host)
  opt.zero_grad();
  zero_grads(params);
  for (const MicroBatch& m : micro) {
    if (m.dropout_counter >= 0)
      student_.dropout_generator().set_counter(static_cast<uint64_t>(m.dropout_counter));
    TeacherOut t = teacher_forward(m.images);
    student_.train();
    ModelOutput s = student_.forward_train(m.images);
    std::vector<Tensor> L = objectives(s, t, m.labels, m.soft_targets);
    // Objectives are f32 scalars whatever the precision: FAMO, the step's values and the
    // gradient sync read them in f32 (engine/precision.h). A metadata check, no device read.
    for (size_t k = 0; k < L.size(); ++k)
      MOKD_CHECK(L[k].dtype() == DType::F32, "distill: objective '", objective_names()[k], "' is ",
                 L[k].str(), ", expected an f32 scalar");
    if (famo_) teacher_outs.push_back(t);
    std::vector<Tensor> parts;
    {
      NoGrad ng;
      for (const Tensor& l : L) parts.push_back(reshape(l.detach(), {1}));
    }
    if (st.diagnostics) {
      std::vector<Tensor> d;
      std::vector<Tensor> g;
      for (Tensor& l : L) {
        l.backward(true);
        g.push_back(flat_grads(params));
        zero_grads(params);
      }
      NoGrad ng;
      for (size_t i = 0; i < g.size(); ++i)
        for (size_t j = i + 1; j < g.size(); ++j) {
          const Tensor ni = sqrt(dot(g[i], g[i])), nj = sqrt(dot(g[j], g[j]));
          d.push_back(reshape(div(dot(g[i], g[j]), add_scalar(mul(ni, nj), 1e-30f)), {1}));
          d.push_back(reshape(div(ni, add_scalar(nj, 1e-30f)), {1}));
        }
      diags.push_back(concat(d, 0));
    }
    Tensor total;
    if (cfg_.method == Method::MoKD && cfg_.weighting == Weighting::Exact2) {
      total = exact2_backward(L, params, st);
    } else {
      if (famo_) {
        if (!weights.defined()) weights = famo_->weights();
        total = famo_->weighted_loss(L, false);  // margins checked on reading
      } else {
        st.weights = cfg_.fixed_weights;
        for (size_t i = 0; i < L.size(); ++i) {
          Tensor term = scale(L[i], cfg_.fixed_weights[i]);
          total = total.defined() ? add(total, term) : term;
        }
      }
      if (sync)
        sync->backward(total);  // the last micro-batch's reduction overlaps its backward
      else
        total.backward();
    }
    {
      NoGrad ng;
      parts.push_back(reshape(total.detach(), {1}));
      values.push_back(concat(parts, 0));
    }
    if (sync && cfg_.method == Method::MoKD && cfg_.weighting == Weighting::Exact2) sync->add();
  }
  if (sync) sync->finish();

  // The step's values, identical on every rank.
  const int64_t K = static_cast<int64_t>(st.names.size());
  const Tensor mean_values = mean_of(values);
  const Tensor losses_before = narrow(mean_values, 0, 0, K);
  const Tensor diag = st.diagnostics ? mean_of(diags) : Tensor();

  // A non-finite norm makes the clipped gradients and the update non-finite too; the trainer
  // stops at that step when it reads the values, before any later checkpoint.
  float max_norm = cfg_.grad_clip > 0 ? cfg_.grad_clip : std::numeric_limits<float>::max();
  const Tensor grad_norm = clip_grad_norm(params, max_norm);
  opt.step();
  if (stiefel_) stiefel_->retract();
  if (bilinear_) bilinear_->retract();

  Tensor after, margin_before, margin_after;
  if (famo_) {
    NoGrad ng;
    std::vector<Tensor> afters;
    for (size_t i = 0; i < micro.size(); ++i) {
      const MicroBatch& m = micro[i];
      if (m.dropout_counter >= 0)
        student_.dropout_generator().set_counter(
            static_cast<uint64_t>(m.dropout_counter + kReforwardOffset));
      ModelOutput s2 = student_.forward_train(m.images);
      std::vector<Tensor> parts;
      for (const Tensor& l : objectives(s2, teacher_outs[i], m.labels, m.soft_targets))
        parts.push_back(reshape(l, {1}));
      afters.push_back(concat(parts, 0));
    }
    after = mean_of(afters);
    if (cfg_.famo.check_positive) {
      margin_before = famo_->margin(losses_before);
      margin_after = famo_->margin(after);
    }
    famo_->update(losses_before, after, false);
  }
  set_pending(st, mean_values, grad_norm, weights, after, margin_before, margin_after, diag);
  return st;
}

// Theorem 3.1 of the MoKD paper: pi_1 = (|g2|^2 - <g1, g2>) / |g1 - g2|^2 clamped to [0, 1], on
// grad log L_i; sets the parameters' gradients to pi_1 g1 + (1 - pi_1) g2 and st.weights.
Tensor Distiller::exact2_backward(const std::vector<Tensor>& L, const std::vector<Tensor>& params,
                                  StepStats& st) {
  log(L[0]).backward(true);
  Tensor g1 = flat_grads(params);
  zero_grads(params);
  log(L[1]).backward();
  Tensor g2 = flat_grads(params);
  double g22 = dot_on_host(g2, g2), g12 = dot_on_host(g1, g2),
         d = dot_on_host(sub(g1, g2), sub(g1, g2));
  double pi1 = d > 0 ? std::clamp((g22 - g12) / d, 0.0, 1.0) : 0.5;
  st.weights = {static_cast<float>(pi1), static_cast<float>(1 - pi1)};
  Tensor g = add(scale(g1, static_cast<float>(pi1)), scale(g2, static_cast<float>(1 - pi1)));
  int64_t off = 0;
  for (const Tensor& p : params) {
    Tensor gp = narrow(g, 0, off, p.numel()).view(p.shape());
    const_cast<Tensor&>(p).set_grad(gp);
    off += p.numel();
  }
  NoGrad ng;
  const float pi = static_cast<float>(pi1);
  return add(scale(log(L[0].detach()), pi), scale(log(L[1].detach()), 1.f - pi));
}

io::State Distiller::state() const {
  io::State s;
  if (stiefel_) s.add("projector", stiefel_->state());
  if (bilinear_) s.add("projector", bilinear_->state());
  if (famo_) s.add("famo", famo_->state());
  s.counters["distill_steps"] = steps_;
  return s;
}

void Distiller::load_state(const io::State& s) {
  int64_t steps = s.counter("distill_steps", "distiller");
  MOKD_CHECK(steps >= 0, "distiller: the checkpoint's distill_steps must be >= 0, got ", steps);
  if (stiefel_) stiefel_->load_state(s.part("projector"));
  if (bilinear_) bilinear_->load_state(s.part("projector"));
  if (famo_) famo_->load_state(s.part("famo"));
  steps_ = steps;
}

}  // namespace mokd
