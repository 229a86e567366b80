#include "mokd/trainer.h"

#include <omp.h>
#include <unistd.h>

#include <atomic>
#include <csignal>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/loader.h"
#include "io/safetensors.h"
#include "engine/precision.h"
#include "io/sha256.h"
#include "models/registry.h"
#include "mokd/distill.h"
#include "mokd/metrics.h"
#include "mokd/schedule.h"

namespace mokd {

namespace fs = std::filesystem;

Device resolve_device(const std::string& name) {
  if (name == "auto") return device_available(Device::cuda()) ? Device::cuda() : Device::cpu();
  Device d = parse_device(name);
  MOKD_CHECK(device_available(d), "run.device = ", name, ": no such device here",
             d.is_cuda() ? " (no CUDA backend or no GPU; use run.device=cpu)" : "");
  return d;
}

namespace {

std::atomic<bool> g_stop_requested{false};

extern "C" void on_stop_signal(int sig) {
  if (g_stop_requested.exchange(true)) {  // second signal: default action
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

}  // namespace

void request_stop() { g_stop_requested = true; }

void install_stop_handlers() {
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
}

namespace {

// The first n samples of a dataset (data.train_limit / data.eval_limit).
class Prefix final : public data::Dataset {
 public:
  Prefix(std::unique_ptr<data::Dataset> base, int64_t n) : base_(std::move(base)), n_(n) {}
  int64_t size() const override { return n_; }
  int64_t height() const override { return base_->height(); }
  int64_t width() const override { return base_->width(); }
  int64_t channels() const override { return base_->channels(); }
  int64_t num_classes() const override { return base_->num_classes(); }
  const std::vector<std::string>& class_names() const override { return base_->class_names(); }
  void read(int64_t i, uint8_t* out, int64_t* label) const override { base_->read(i, out, label); }

 private:
  std::unique_ptr<data::Dataset> base_;
  int64_t n_;
};

data::Normalize dataset_normalize(const TrainConfig& cfg, int64_t channels) {
  data::Normalize n;
  auto to_f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  if (!cfg.data.mean.empty()) {
    n.mean = to_f(cfg.data.mean);
    n.std = to_f(cfg.data.std.empty() ? std::vector<double>(cfg.data.mean.size(), 1.0) : cfg.data.std);
    return n;
  }
  const std::string& d = cfg.data.dataset;
  if (d == "fashion_mnist") n = {{0.2860f}, {0.3530f}};
  else if (d == "cifar10") n = {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  else if (d == "cifar100") n = {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  else n = {{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};  // ImageNet statistics
  if (channels == 1 && n.mean.size() == 3) n = {{n.mean[0]}, {n.std[0]}};
  return n;
}

data::LoaderOptions loader_options(const TrainConfig& cfg, const data::Dataset& ds, bool train,
                                   uint64_t seed) {
  data::LoaderOptions o;
  o.batch_size = train ? cfg.data.batch_size : cfg.data.eval_batch_size;
  o.shuffle = train;
  o.drop_last = train && ds.size() >= cfg.data.batch_size;
  o.seed = seed;
  o.num_workers = cfg.data.workers;
  o.prefetch = std::max(1, cfg.data.prefetch);
  o.normalize = dataset_normalize(cfg, ds.channels());
  if (train) {
    int64_t pad = cfg.data.crop_padding;
    if (pad < 0) pad = (cfg.data.dataset == "fashion_mnist") ? 2 : (cfg.data.dataset == "image_folder" ? -1 : 4);
    o.augment.crop_padding = pad;
    o.augment.hflip = cfg.data.hflip;
    o.augment.random_resized_crop = cfg.data.random_resized_crop;
    o.mixup.mixup_alpha = cfg.data.mixup_alpha;
    o.mixup.cutmix_alpha = cfg.data.cutmix_alpha;
    o.mixup.prob = cfg.data.mixup_prob;
    o.mixup.switch_prob = cfg.data.mixup_switch_prob;
    // Label smoothing is applied by the loss on hard labels; under mixup/cutmix it is folded into
    // the soft targets (timm's Mixup).
    if (o.mixup.mixup_alpha > 0 || o.mixup.cutmix_alpha > 0)
      o.mixup.label_smoothing = cfg.optim.label_smoothing;
  }
  return o;
}

std::string human_time(double s) {
  char buf[32];
  if (s < 0 || !std::isfinite(s)) return "?";
  int64_t t = static_cast<int64_t>(s);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", (long)(t / 3600), (long)(t / 60 % 60));
  else std::snprintf(buf, sizeof buf, "%ldm%02lds", (long)(t / 60), (long)(t % 60));
  return buf;
}

}  // namespace

DistillConfig make_distill_config(const TrainConfig& cfg) {
  DistillConfig dc;
  dc.method = parse_method(cfg.distill.method);
  dc.num_objectives = cfg.distill.num_objectives;
  dc.weighting = parse_weighting(cfg.distill.weighting);
  dc.fixed_weights.assign(cfg.distill.fixed_weights.begin(), cfg.distill.fixed_weights.end());
  dc.label_smoothing = static_cast<float>(cfg.optim.label_smoothing);
  dc.temperature = static_cast<float>(cfg.distill.temperature);
  dc.kd_alpha = static_cast<float>(cfg.distill.kd_alpha);
  dc.projector = parse_projector(cfg.distill.projector);
  dc.bilinear_rank = cfg.distill.bilinear_rank;
  dc.student_feature = parse_feature_source(cfg.distill.student_feature);
  dc.teacher_feature = parse_feature_source(cfg.distill.teacher_feature);
  dc.grad_clip = static_cast<float>(cfg.optim.grad_clip);
  dc.famo.lr = static_cast<float>(cfg.distill.famo_lr);
  dc.famo.weight_decay = static_cast<float>(cfg.distill.famo_weight_decay);
  dc.diagnostics_every = static_cast<int>(cfg.distill.diagnostics_every);
  dc.seed = cfg.run.seed + 2;
  return dc;
}

std::unique_ptr<data::Dataset> open_dataset(const TrainConfig& cfg, bool train) {
  const std::string& d = cfg.data.dataset;
  std::string split = train ? "train" : "test";
  std::unique_ptr<data::Dataset> ds;
  if (d == "fashion_mnist") {
    ds = data::load_fashion_mnist(cfg.data.dir.empty() ? data::kFashionMnistDir : cfg.data.dir, split);
  } else if (d == "cifar10" || d == "cifar100") {
    MOKD_CHECK(!cfg.data.dir.empty(), "data.dir: set it to the folder of the CIFAR binary batches");
    ds = data::load_cifar(cfg.data.dir, d == "cifar10" ? 10 : 100, split);
  } else if (d == "image_folder") {
    MOKD_CHECK(!cfg.data.dir.empty(), "data.dir: set it to a folder holding train/ and val/");
    MOKD_CHECK(cfg.data.image_size > 0, "data.image_size: image_folder needs an image size > 0");
    ds = data::open_image_folder(cfg.data.dir + (train ? "/train" : "/val"), cfg.data.image_size);
  } else {
    MOKD_FAIL("data.dataset: unknown dataset '", d, "'");
  }
  int64_t limit = train ? cfg.data.train_limit : cfg.data.eval_limit;
  if (limit > 0 && limit < ds->size()) return std::make_unique<Prefix>(std::move(ds), limit);
  return ds;
}

std::unique_ptr<Model> make_model(const std::string& name, const TrainConfig& cfg,
                                  const data::Dataset& ds, uint64_t seed, bool is_student) {
  ModelOverrides o;
  o.num_classes = ds.num_classes();
  o.in_chans = ds.channels();
  o.img_size = ds.height();
  MOKD_CHECK(ds.height() == ds.width(), "data: images are ", ds.height(), "x", ds.width(),
             "; models need square images (set data.image_size)");
  if (is_student) {
    o.drop_path_rate = static_cast<float>(cfg.model.drop_path_rate);
    o.drop_rate = static_cast<float>(cfg.model.drop_rate);
  }
  o.seed = seed;
  auto m = create_model(name, o);
  m->set_name(name);
  return m;
}

EvalResult evaluate(Model& model, const data::Dataset& ds, const TrainConfig& cfg, Device dev) {
  NoGrad ng;
  bool was_training = model.is_training();
  model.eval();
  data::Loader loader(ds, loader_options(cfg, ds, false, 0));
  loader.start_epoch(0);
  data::Batch b;
  EvalResult r;
  double loss_sum = 0;
  int64_t c1 = 0, c5 = 0;
  while (loader.next(b)) {
    Tensor logits = model.forward(b.images.to(dev));
    int64_t n = b.labels.numel();
    loss_sum += cross_entropy(logits, b.labels.to(dev), 0.f).item() * n;
    auto lv = logits.to_vector();
    auto yv = b.labels.to_vector_i64();
    int64_t classes = logits.size(1);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = lv.data() + i * classes;
      float target = row[yv[i]];
      int64_t above = 0;  // classes scoring strictly higher than the true one
      for (int64_t c = 0; c < classes; ++c) above += row[c] > target;
      c1 += above < 1;
      c5 += above < 5;
    }
    r.count += n;
  }
  model.train(was_training);
  MOKD_CHECK(r.count > 0, "evaluate: the evaluation set is empty");
  r.top1 = 100.0 * c1 / r.count;
  r.top5 = 100.0 * c5 / r.count;
  r.loss = loss_sum / r.count;
  return r;
}

namespace {

class Run {
 public:
  Run(const TrainConfig& cfg, TrainMode mode) : cfg_(cfg), mode_(mode) {}
  TrainSummary go();

 private:
  void setup();
  void save_checkpoint(bool best);
  void load_checkpoint();
  void update_ema();
  EvalResult eval_ema();
  StepStats teacher_step(const data::Batch& b);
  void log_step(const StepStats& st, double images_per_s, double eta, bool print);

  TrainConfig cfg_;
  TrainMode mode_;
  Device dev_;
  std::string ckpt_dir_;
  std::unique_ptr<data::Dataset> train_set_, test_set_;
  std::unique_ptr<Model> model_;    // the model being trained (teacher or student)
  std::unique_ptr<Model> teacher_;  // distill mode: frozen
  std::string teacher_sha_;
  std::unique_ptr<Distiller> distiller_;
  std::unique_ptr<Optimizer> opt_;
  std::unique_ptr<CosineSchedule> sched_;
  std::unique_ptr<data::Loader> loader_;
  std::unique_ptr<MetricsLog> metrics_;
  nn::NamedTensors ema_;  // parameter and buffer copies
  std::vector<Tensor> trainable_;
  int64_t step_ = 0, epoch_ = 0, batch_in_epoch_ = 0, total_steps_ = 0, steps_per_epoch_ = 0;
  double best_top1_ = -1;
  EvalResult best_;
  bool tty_ = false;
};

void Run::setup() {
  if (cfg_.run.threads > 0) omp_set_num_threads(cfg_.run.threads);
  dev_ = resolve_device(cfg_.run.device);
  set_matmul_precision(parse_precision(cfg_.run.precision.c_str()));
  tty_ = isatty(fileno(stdout));
  ckpt_dir_ = cfg_.run.out_dir + "/checkpoints";
  fs::create_directories(ckpt_dir_);
  {
    std::ofstream f(cfg_.run.out_dir + "/config.toml");
    f << to_toml(cfg_);
  }
  train_set_ = open_dataset(cfg_, true);
  test_set_ = open_dataset(cfg_, false);
  MOKD_CHECK(train_set_->num_classes() == test_set_->num_classes(), "data: train split has ",
             train_set_->num_classes(), " classes, test split ", test_set_->num_classes());

  const std::string& name = mode_ == TrainMode::Teacher ? cfg_.model.teacher : cfg_.model.student;
  model_ = make_model(name, cfg_, *train_set_, cfg_.run.seed, true);
  if (!cfg_.model.student_init.empty() && mode_ == TrainMode::Distill)
    model_->load_state_dict(io::load_safetensors(cfg_.model.student_init));
  model_->to(dev_);
  model_->train();

  nn::NamedTensors named = model_->named_parameters();
  if (mode_ == TrainMode::Distill) {
    std::string tw = cfg_.model.teacher_weights;
    MOKD_CHECK(!tw.empty(), "model.teacher_weights: distillation needs the teacher's weights (a safetensors file with timm names, e.g. the best.safetensors of a `mokd_train teacher` run)");
    MOKD_CHECK(fs::exists(tw), "model.teacher_weights: ", tw, " does not exist");
    teacher_ = make_model(cfg_.model.teacher, cfg_, *train_set_, cfg_.run.seed + 1, false);
    try {
      teacher_->load_state_dict(io::load_safetensors(tw));
    } catch (const Error& e) {
      MOKD_FAIL("model.teacher_weights: ", tw, " does not fit model.teacher = ", cfg_.model.teacher, ": ", e.what());
    }
    teacher_sha_ = sha256_file(tw);
    teacher_->to(dev_);
    teacher_->eval();
    DistillConfig dc = make_distill_config(cfg_);
    distiller_ = std::make_unique<Distiller>(*model_, *teacher_, dc);
    for (auto& p : distiller_->projector_parameters()) named.push_back(p);
  }
  for (auto& [n, t] : named) trainable_.push_back(t);
  float lr = static_cast<float>(cfg_.optim.lr), wd = static_cast<float>(cfg_.optim.weight_decay);
  if (cfg_.optim.optimizer == "sgd") {
    SgdOptions so;
    so.momentum = static_cast<float>(cfg_.optim.momentum);
    so.nesterov = cfg_.optim.nesterov;
    opt_ = std::make_unique<SGD>(decay_groups(named, lr, wd), so);
  } else {
    opt_ = std::make_unique<AdamW>(decay_groups(named, lr, wd));
  }

  loader_ = std::make_unique<data::Loader>(*train_set_, loader_options(cfg_, *train_set_, true, cfg_.run.seed));
  steps_per_epoch_ = loader_->batches_per_epoch();
  MOKD_CHECK(steps_per_epoch_ > 0, "data: the training set (", train_set_->size(), " images) yields no batch of data.batch_size = ", cfg_.data.batch_size);
  total_steps_ = cfg_.optim.steps > 0 ? cfg_.optim.steps : cfg_.optim.epochs * steps_per_epoch_;
  CosineScheduleConfig sc;
  sc.base_lr = lr;
  sc.min_lr = std::min(static_cast<float>(cfg_.optim.min_lr), lr);
  sc.warmup_start_lr = static_cast<float>(cfg_.optim.warmup_lr);
  sc.warmup_steps = std::min(cfg_.optim.warmup_steps, std::max<int64_t>(total_steps_ - 1, 0));
  sc.total_steps = std::max<int64_t>(total_steps_, sc.warmup_steps + 1);
  sched_ = std::make_unique<CosineSchedule>(sc);

  if (cfg_.optim.ema_decay > 0) {
    NoGrad ng;
    for (auto& [n, t] : model_->named_parameters()) ema_.push_back({n, t.detach().clone()});
  }
  bool resume = cfg_.run.resume && fs::exists(ckpt_dir_ + "/state.safetensors");
  if (cfg_.run.resume && !resume)
    std::printf("run.resume: no checkpoint in %s, starting from scratch\n", ckpt_dir_.c_str());
  metrics_ = std::make_unique<MetricsLog>(cfg_.run.out_dir, resume);
  if (resume) load_checkpoint();
}

void Run::save_checkpoint(bool best) {
  NoGrad ng;
  io::TensorMap weights = model_->state_dict();
  io::Metadata meta{{"model", model_->name()}, {"step", std::to_string(step_)},
                    {"epoch", std::to_string(epoch_)}, {"format", "mokd-weights-1"}};
  io::save_safetensors(ckpt_dir_ + "/last.safetensors", weights, meta);
  if (best) io::save_safetensors(ckpt_dir_ + "/best.safetensors", weights, meta);

  io::TensorMap state;
  for (auto& [k, v] : weights) state["model." + k] = v;
  for (auto& [k, v] : opt_->state()) state["optim." + k] = v;
  if (distiller_) {
    for (auto& [k, v] : distiller_->projector_parameters()) state[k] = v;
    if (Famo* f = distiller_->famo()) {
      state["famo.w"] = f->logits();
      state["famo.m"] = f->adam_m();
      state["famo.v"] = f->adam_v();
    }
  }
  for (auto& [k, v] : ema_) state["ema." + k] = v;
  nlohmann::json j;
  j["step"] = step_;
  j["epoch"] = epoch_;
  j["batch_in_epoch"] = batch_in_epoch_;
  j["dropout_counter"] = model_->dropout_generator().counter();
  j["best_top1"] = best_top1_;
  j["best_top5"] = best_.top5;
  j["config_hash"] = config_hash(cfg_);
  j["teacher_sha256"] = teacher_sha_;
  j["famo_step"] = distiller_ && distiller_->famo() ? distiller_->famo()->adam_step() : 0;
  j["distill_steps"] = distiller_ ? distiller_->steps() : 0;
  io::save_safetensors(ckpt_dir_ + "/state.safetensors", state, {{"mokd_state", j.dump()}});
}

void Run::load_checkpoint() {
  std::string path = ckpt_dir_ + "/state.safetensors";
  io::Metadata meta;
  io::TensorMap st = io::load_safetensors(path, {}, &meta);
  MOKD_CHECK(meta.count("mokd_state"), path, ": not a mokd training state (no mokd_state metadata)");
  nlohmann::json j = nlohmann::json::parse(meta.at("mokd_state"));
  std::string want = config_hash(cfg_);
  MOKD_CHECK(j.at("config_hash").get<std::string>() == want, path,
             ": the checkpoint was written with a different configuration (only run.*, log.*, data.workers/prefetch, optim.epochs/steps may change on --resume); see ", cfg_.run.out_dir, "/config.toml");
  MOKD_CHECK(j.at("teacher_sha256").get<std::string>() == teacher_sha_, path,
             ": the teacher file ", cfg_.model.teacher_weights, " changed since the checkpoint (SHA-256 differs)");
  io::TensorMap weights, optim;
  for (auto& [k, v] : st) {
    if (k.rfind("model.", 0) == 0) weights[k.substr(6)] = v;
    else if (k.rfind("optim.", 0) == 0) optim[k.substr(6)] = v.to(dev_);
  }
  model_->load_state_dict(weights);
  opt_->load_state(optim);
  if (distiller_) {
    for (auto& [k, v] : distiller_->projector_parameters()) {
      MOKD_CHECK(st.count(k), path, ": missing ", k);
      Tensor t = v;
      t.copy_(st.at(k));
    }
    if (Famo* f = distiller_->famo()) {
      f->logits().copy_(st.at("famo.w"));
      f->adam_m().copy_(st.at("famo.m"));
      f->adam_v().copy_(st.at("famo.v"));
      f->adam_step() = j.at("famo_step").get<int64_t>();
    }
    distiller_->set_steps(j.at("distill_steps").get<int64_t>());
  }
  for (auto& [k, v] : ema_) v.copy_(st.at("ema." + k));
  step_ = j.at("step").get<int64_t>();
  epoch_ = j.at("epoch").get<int64_t>();
  batch_in_epoch_ = j.at("batch_in_epoch").get<int64_t>();
  model_->dropout_generator().set_counter(j.at("dropout_counter").get<uint64_t>());
  best_top1_ = j.at("best_top1").get<double>();
  best_.top1 = best_top1_;
  best_.top5 = j.at("best_top5").get<double>();
  std::printf("resumed from %s at step %ld (epoch %ld, batch %ld)\n", path.c_str(), (long)step_,
              (long)epoch_ + 1, (long)batch_in_epoch_);
}

void Run::update_ema() {
  NoGrad ng;
  float d = static_cast<float>(cfg_.optim.ema_decay);
  auto params = model_->named_parameters();
  for (size_t i = 0; i < ema_.size(); ++i) {
    Tensor mixed = add(scale(ema_[i].second, d), scale(params[i].second.detach(), 1.f - d));
    ema_[i].second.copy_(mixed);
  }
}

EvalResult Run::eval_ema() {
  NoGrad ng;
  auto params = model_->named_parameters();
  std::vector<Tensor> saved;
  for (size_t i = 0; i < params.size(); ++i) {
    saved.push_back(params[i].second.detach().clone());
    Tensor p = params[i].second;
    p.copy_(ema_[i].second);
  }
  EvalResult r = evaluate(*model_, *test_set_, cfg_, dev_);
  for (size_t i = 0; i < params.size(); ++i) {
    Tensor p = params[i].second;
    p.copy_(saved[i]);
  }
  return r;
}

StepStats Run::teacher_step(const data::Batch& b) {
  StepStats st;
  st.names = {"task"};
  Tensor x = b.images.to(dev_);
  Tensor logits = model_->forward_train(x).logits;
  Tensor loss = b.soft_targets.defined()
                    ? cross_entropy_soft(logits, b.soft_targets.to(dev_))
                    : cross_entropy(logits, b.labels.to(dev_), static_cast<float>(cfg_.optim.label_smoothing));
  float v = loss.item();
  MOKD_CHECK(std::isfinite(v), "step ", step_ + 1, ": the loss is not finite (", v,
             "); the run stops here and the last checkpoint in ", ckpt_dir_, " is intact; lower optim.lr");
  st.losses = {v};
  st.weights = {1.f};
  st.total = v;
  opt_->zero_grad();
  loss.backward();
  float max_norm = cfg_.optim.grad_clip > 0 ? static_cast<float>(cfg_.optim.grad_clip) : 3.4e38f;
  st.grad_norm = clip_grad_norm(trainable_, max_norm).item();
  MOKD_CHECK(std::isfinite(st.grad_norm), "step ", step_ + 1, ": the gradient norm is not finite; the run stops here and the last checkpoint in ", ckpt_dir_, " is intact");
  opt_->step();
  return st;
}

// A metrics row every step; the progress line only when `print` (every log.log_every steps).
void Run::log_step(const StepStats& st, double ips, double eta, bool print) {
  std::map<std::string, double> row{{"step", double(step_)}, {"epoch", double(epoch_ + 1)},
                                    {"lr", opt_->current_lr(opt_->groups().size() - 1)},
                                    {"total", st.total}, {"grad_norm", st.grad_norm}};
  if (print) row["images_per_s"] = ips;
  std::string line;
  char buf[256];
  std::snprintf(buf, sizeof buf, "epoch %ld/%ld step %ld/%ld | %.0f img/s | ETA %s | loss",
                (long)epoch_ + 1, (long)((total_steps_ + steps_per_epoch_ - 1) / steps_per_epoch_),
                (long)step_, (long)total_steps_, ips, human_time(eta).c_str());
  line = buf;
  for (size_t i = 0; i < st.names.size(); ++i) {
    row["loss." + st.names[i]] = st.losses[i];
    std::snprintf(buf, sizeof buf, " %s %.4f", st.names[i].c_str(), st.losses[i]);
    line += buf;
  }
  if (st.names.size() > 1) {
    line += " | w";
    for (size_t i = 0; i < st.weights.size(); ++i) {
      row["weight." + st.names[i]] = st.weights[i];
      std::snprintf(buf, sizeof buf, "%s%.3f", i ? "/" : " ", st.weights[i]);
      line += buf;
    }
  }
  if (st.diagnostics) {
    size_t k = 0;
    for (size_t i = 0; i < st.names.size(); ++i)
      for (size_t j = i + 1; j < st.names.size(); ++j, ++k) {
        std::string key = std::to_string(i) + "." + std::to_string(j);
        row["cos." + key] = st.grad_cosine[k];
        row["ratio." + key] = st.grad_norm_ratio[k];
      }
  }
  std::snprintf(buf, sizeof buf, " | lr %.2e", row["lr"]);
  line += buf;
  metrics_->write("step", row);
  if (!print) return;
  if (tty_) std::printf("\r\033[K%s", line.c_str());
  else std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

TrainSummary Run::go() {
  auto t_start = std::chrono::steady_clock::now();
  setup();
  std::printf("%s %s on %s (%s matmuls): %ld train / %ld test images, %ld steps (%ld per epoch), %ld parameters\n",
              mode_ == TrainMode::Teacher ? "teacher" : "distill", model_->name().c_str(),
              dev_.str().c_str(), cfg_.run.precision.c_str(), (long)train_set_->size(), (long)test_set_->size(),
              (long)total_steps_, (long)steps_per_epoch_, (long)model_->num_parameters());
  if (distiller_)
    std::printf("method %s, teacher %s (%s)\n", cfg_.distill.method.c_str(), cfg_.model.teacher.c_str(),
                cfg_.model.teacher_weights.c_str());
  TrainSummary sum;
  auto window_start = std::chrono::steady_clock::now();
  int64_t window_images = 0, steps_this_run = 0;
  while (step_ < total_steps_) {
    loader_->start_epoch(epoch_, batch_in_epoch_);
    data::Batch b;
    bool epoch_done = false;
    while (step_ < total_steps_) {
      if (!loader_->next(b)) {
        epoch_done = true;
        break;
      }
      opt_->set_lr_scale(sched_->lr_at(step_) / sched_->base_lr());
      StepStats st;
      if (mode_ == TrainMode::Teacher) {
        st = teacher_step(b);
      } else {
        Tensor soft = b.soft_targets.defined() ? b.soft_targets.to(dev_) : Tensor();
        st = distiller_->step(*opt_, b.images.to(dev_), b.labels.to(dev_), soft);
      }
      if (!ema_.empty()) update_ema();
      ++step_;
      ++batch_in_epoch_;
      window_images += b.labels.numel();
      bool last = step_ == total_steps_;
      bool print = step_ % std::max<int64_t>(cfg_.log.log_every, 1) == 0 || last || step_ == 1 || st.diagnostics;
      double ips = 0, eta = -1;
      if (print) {
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
        ips = dt > 0 ? window_images / dt : 0;
        eta = ips > 0 ? (total_steps_ - step_) * static_cast<double>(cfg_.data.batch_size) / ips : -1;
        window_start = std::chrono::steady_clock::now();
        window_images = 0;
      }
      log_step(st, ips, eta, print);
      if (cfg_.log.checkpoint_every > 0 && step_ % cfg_.log.checkpoint_every == 0 && !last)
        save_checkpoint(false);
      bool signalled = g_stop_requested.exchange(false);
      if (((cfg_.run.stop_after > 0 && ++steps_this_run == cfg_.run.stop_after) || signalled) && !last) {
        save_checkpoint(false);
        std::printf("%s%s: stopped at step %ld with a checkpoint in %s; continue with --run.resume=true\n",
                    tty_ ? "\n" : "", signalled ? "signal" : "run.stop_after", (long)step_, ckpt_dir_.c_str());
        sum.steps = step_;
        sum.stopped = true;
        sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
        return sum;
      }
    }
    if (!epoch_done && step_ < total_steps_) continue;
    bool end = step_ >= total_steps_;
    if (epoch_done) {
      ++epoch_;
      batch_in_epoch_ = 0;
    }
    bool do_eval = end || (cfg_.log.eval_every > 0 && epoch_ % cfg_.log.eval_every == 0);
    if (do_eval) {
      if (tty_) std::printf("\n");
      EvalResult r = evaluate(*model_, *test_set_, cfg_, dev_);
      std::map<std::string, double> row{{"step", double(step_)}, {"epoch", double(epoch_)},
                                        {"top1", r.top1}, {"top5", r.top5}, {"eval_loss", r.loss}};
      std::printf("eval after %ld steps: top-1 %.2f%%  top-5 %.2f%%  loss %.4f", (long)step_, r.top1, r.top5, r.loss);
      if (!ema_.empty()) {
        EvalResult e = eval_ema();
        row["ema.top1"] = e.top1;
        row["ema.top5"] = e.top5;
        std::printf("  (EMA top-1 %.2f%%)", e.top1);
      }
      std::printf("\n");
      metrics_->write("eval", row);
      bool best = r.top1 > best_top1_;
      if (best) {
        best_top1_ = r.top1;
        best_ = r;
      }
      save_checkpoint(best);
      sum.final_eval = r;
    } else if (cfg_.log.checkpoint_every == 0) {
      save_checkpoint(false);
    }
  }
  sum.best_eval = best_;
  sum.steps = step_;
  sum.best_weights = ckpt_dir_ + "/best.safetensors";
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  if (sum.final_eval.count == 0 && step_ > 0) sum.final_eval = evaluate(*model_, *test_set_, cfg_, dev_);
  return sum;
}

}  // namespace

TrainSummary train(const TrainConfig& cfg, TrainMode mode) {
  Run r(cfg, mode);
  return r.go();
}

}  // namespace mokd
