#include "mokd/setup.h"

#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "engine/precision.h"
#include "io/safetensors.h"
#include "io/sha256.h"
#include "models/registry.h"

namespace mokd {

namespace fs = std::filesystem;

std::string default_out_dir(const TrainConfig& cfg, TrainMode mode) {
  if (!cfg.run.out_dir.empty()) return cfg.run.out_dir;
  return mode == TrainMode::Teacher ? "runs/teacher-" + cfg.model.teacher
                                    : "runs/distill-" + cfg.model.student;
}

Device resolve_device(const std::string& name) {
  if (name == "auto") return device_available(Device::cuda()) ? Device::cuda() : Device::cpu();
  Device d = parse_device(name);
  MOKD_CHECK(device_available(d), "run.device = ", name, ": no such device here",
             d.is_cuda() ? " (no CUDA backend or no GPU; use run.device=cpu)" : "");
  if (d.is_cuda()) {
    MOKD_CHECK(d.index < cuda_device_count(), "run.device = ", name, ": this process sees ",
               cuda_device_count(), " GPU(s)");
    use_cuda_device(d.index);  // the engine computes on one GPU per process
  }
  return d;
}

void apply_runtime_settings(const TrainConfig& cfg) {
  if (cfg.run.threads > 0) omp_set_num_threads(cfg.run.threads);
  set_matmul_precision(parse_precision(cfg.run.precision.c_str()));
}

namespace {

// Samples [begin, begin + n) of a dataset: data.train_limit / data.eval_limit (owning), a rank's
// share of the evaluation set (not owning).
class Range final : public data::Dataset {
 public:
  Range(std::unique_ptr<data::Dataset> base, int64_t n)
      : owned_(std::move(base)), base_(owned_.get()), n_(n) {}
  Range(const data::Dataset& base, int64_t begin, int64_t n) : base_(&base), begin_(begin), n_(n) {}
  int64_t size() const override { return n_; }
  int64_t height() const override { return base_->height(); }
  int64_t width() const override { return base_->width(); }
  int64_t channels() const override { return base_->channels(); }
  int64_t num_classes() const override { return base_->num_classes(); }
  const std::vector<std::string>& class_names() const override { return base_->class_names(); }
  void fetch(int64_t i, data::RawSample* out) const override { base_->fetch(begin_ + i, out); }
  std::string source(int64_t i) const override { return base_->source(begin_ + i); }
  std::string location() const override { return base_->location(); }

 private:
  std::unique_ptr<data::Dataset> owned_;
  const data::Dataset* base_;
  int64_t begin_ = 0, n_;
};

data::Normalize dataset_normalize(const TrainConfig& cfg, int64_t channels) {
  data::Normalize n;
  auto to_f = [](const std::vector<double>& v) { return std::vector<float>(v.begin(), v.end()); };
  if (!cfg.data.mean.empty()) {
    n.mean = to_f(cfg.data.mean);
    n.std =
        to_f(cfg.data.std.empty() ? std::vector<double>(cfg.data.mean.size(), 1.0) : cfg.data.std);
    return n;
  }
  const std::string& d = cfg.data.dataset;
  if (d == "fashion_mnist")
    n = {{0.2860f}, {0.3530f}};
  else if (d == "cifar10")
    n = {{0.4914f, 0.4822f, 0.4465f}, {0.2470f, 0.2435f, 0.2616f}};
  else if (d == "cifar100")
    n = {{0.5071f, 0.4865f, 0.4409f}, {0.2673f, 0.2564f, 0.2762f}};
  else
    n = {{0.485f, 0.456f, 0.406f}, {0.229f, 0.224f, 0.225f}};  // ImageNet statistics
  if (channels == 1 && n.mean.size() == 3) n = {{n.mean[0]}, {n.std[0]}};
  return n;
}

// The tar shards of a split: data.train_shards / data.val_shards, else data.dir/train or /val.
std::string tar_shards_spec(const TrainConfig& cfg, bool train) {
  const std::string& shards = train ? cfg.data.train_shards : cfg.data.val_shards;
  return shards.empty() ? cfg.data.dir + (train ? "/train" : "/val") : shards;
}

}  // namespace

std::unique_ptr<data::Dataset> open_dataset(const TrainConfig& cfg, bool train) {
  const std::string& d = cfg.data.dataset;
  std::string split = train ? "train" : "test";
  std::unique_ptr<data::Dataset> ds;
  if (d == "fashion_mnist") {
    ds = data::load_fashion_mnist(cfg.data.dir.empty() ? data::kFashionMnistDir : cfg.data.dir,
                                  split);
  } else if (d == "cifar10" || d == "cifar100") {
    MOKD_CHECK(!cfg.data.dir.empty(), "data.dir: set it to the folder of the CIFAR binary batches");
    ds = data::load_cifar(cfg.data.dir, d == "cifar10" ? 10 : 100, split);
  } else if (d == "image_folder") {
    MOKD_CHECK(!cfg.data.dir.empty(), "data.dir: set it to a folder holding train/ and val/");
    MOKD_CHECK(cfg.data.image_size > 0, "data.image_size: image_folder needs an image size > 0");
    ds = data::open_image_folder(cfg.data.dir + (train ? "/train" : "/val"));
  } else if (d == "tar_shards") {
    const std::string& shards = train ? cfg.data.train_shards : cfg.data.val_shards;
    MOKD_CHECK(!shards.empty() || !cfg.data.dir.empty(),
               train ? "data.train_shards" : "data.val_shards",
               ": set it to the shards (a folder of .tar files or a pattern such as "
               "train-{000000..001023}.tar), or data.dir to a folder holding train/ and val/");
    MOKD_CHECK(cfg.data.image_size > 0, "data.image_size: tar_shards needs an image size > 0");
    ds = data::open_tar_shards(tar_shards_spec(cfg, train));
  } else {
    MOKD_FAIL("data.dataset: unknown dataset '", d, "'");
  }
  int64_t limit = train ? cfg.data.train_limit : cfg.data.eval_limit;
  if (limit > 0 && limit < ds->size()) return std::make_unique<Range>(std::move(ds), limit);
  return ds;
}

std::unique_ptr<data::Dataset> dataset_slice(const data::Dataset& ds, int64_t begin, int64_t n) {
  MOKD_CHECK(begin >= 0 && n >= 0 && begin + n <= ds.size(), "dataset_slice: [", begin, ", ",
             begin + n, ") outside the ", ds.size(), " samples of ", ds.location());
  return std::make_unique<Range>(ds, begin, n);
}

int64_t micro_batch_size(const TrainConfig& cfg, int world) {
  const int64_t parts = static_cast<int64_t>(world) * cfg.optim.accum_steps;
  MOKD_CHECK(cfg.data.batch_size % parts == 0, "data.batch_size = ", cfg.data.batch_size,
             " (the global batch) does not split into ", world, " process(es) x ",
             cfg.optim.accum_steps, " micro-batch(es) (optim.accum_steps): choose a multiple of ",
             parts);
  return cfg.data.batch_size / parts;
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
  o.pin_memory = cfg.data.pin_memory;
  o.normalize = dataset_normalize(cfg, ds.channels());
  o.skip_bad_samples = cfg.data.bad_samples == "skip";
  data::TransformOptions& t = o.transform;
  t.train = train;
  t.height = t.width = cfg.data.image_size;
  t.interpolation = data::parse_interpolation(cfg.data.interpolation, "data.interpolation");
  t.crop_pct = cfg.data.crop_pct;
  if (train) {
    int64_t pad = cfg.data.crop_padding;
    if (pad < 0) pad = (cfg.data.dataset == "fashion_mnist") ? 2 : (ds.fixed_size() ? 4 : -1);
    data::AugmentOptions& a = t.augment;
    a.crop_padding = pad;
    a.hflip = cfg.data.hflip;
    a.random_resized_crop = cfg.data.random_resized_crop;
    a.scale_min = cfg.data.scale_min;
    a.scale_max = cfg.data.scale_max;
    a.ratio_min = cfg.data.ratio_min;
    a.ratio_max = cfg.data.ratio_max;
    MOKD_CHECK(a.scale_min <= a.scale_max, "data.scale_min (", a.scale_min,
               ") must not exceed data.scale_max (", a.scale_max, ")");
    MOKD_CHECK(a.ratio_min <= a.ratio_max, "data.ratio_min (", a.ratio_min,
               ") must not exceed data.ratio_max (", a.ratio_max, ")");
    if (!cfg.data.auto_augment.empty()) {
      t.rand_augment = true;
      t.rand_augment_options = data::parse_rand_augment(cfg.data.auto_augment, "data.auto_augment");
      // timm's hparams: img_mean from the normalisation mean, the configured interpolation.
      if (!cfg.data.mean.empty() && cfg.data.mean.size() == 3)
        t.rand_augment_options.params.fill = data::fill_from_mean(cfg.data.mean);
      t.rand_augment_options.params.interpolation = t.interpolation == data::Interpolation::Bilinear
                                                        ? data::AffineInterpolation::Bilinear
                                                        : data::AffineInterpolation::Bicubic;
    } else {
      t.color_jitter = cfg.data.color_jitter;
    }
    o.random_erasing = cfg.data.reprob > 0;
    o.erasing.probability = cfg.data.reprob;
    o.erasing.mode = data::parse_erase_mode(cfg.data.remode);
    o.erasing.min_count = static_cast<int>(cfg.data.recount);
    o.repeats = static_cast<int>(cfg.data.aug_repeats);
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

std::unique_ptr<Model> make_model(const std::string& name, const TrainConfig& cfg,
                                  const data::Dataset& ds, uint64_t seed, bool is_student) {
  ModelOverrides o;
  o.num_classes = ds.num_classes();
  o.in_chans = ds.channels();
  // The loader's output: data.image_size squared, or a fixed-size split's own size.
  o.img_size = cfg.data.image_size > 0 ? cfg.data.image_size : ds.height();
  MOKD_CHECK(cfg.data.image_size > 0 || ds.height() == ds.width(), "data: images are ", ds.height(),
             "x", ds.width(), "; models need square images (set data.image_size)");
  if (is_student) {
    o.drop_path_rate = static_cast<float>(cfg.model.drop_path_rate);
    o.drop_rate = static_cast<float>(cfg.model.drop_rate);
  }
  o.seed = seed;
  auto m = create_model(name, o);
  m->set_name(name);
  return m;
}

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

std::unique_ptr<Optimizer> make_optimizer(const TrainConfig& cfg, const NamedTensors& params) {
  float lr = static_cast<float>(cfg.optim.lr), wd = static_cast<float>(cfg.optim.weight_decay);
  if (cfg.optim.optimizer == "sgd") {
    SgdOptions so;
    so.momentum = static_cast<float>(cfg.optim.momentum);
    so.nesterov = cfg.optim.nesterov;
    return std::make_unique<SGD>(decay_groups(params, lr, wd), so);
  }
  return std::make_unique<AdamW>(decay_groups(params, lr, wd));
}

std::unique_ptr<CosineSchedule> make_schedule(const TrainConfig& cfg, int64_t total_steps) {
  float lr = static_cast<float>(cfg.optim.lr);
  CosineScheduleConfig sc;
  sc.base_lr = lr;
  sc.min_lr = std::min(static_cast<float>(cfg.optim.min_lr), lr);
  sc.warmup_start_lr = static_cast<float>(cfg.optim.warmup_lr);
  sc.warmup_steps = std::min(cfg.optim.warmup_steps, std::max<int64_t>(total_steps - 1, 0));
  sc.total_steps = std::max<int64_t>(total_steps, sc.warmup_steps + 1);
  return std::make_unique<CosineSchedule>(sc);
}

void load_init(Model& m, const std::string& key, const std::string& path, bool reset_head) {
  MOKD_CHECK(fs::exists(path), key, ": ", path, " does not exist");
  const io::TensorMap sd = io::load_safetensors(path);
  const std::set<std::string> head = m.head_names();
  try {
    m.load_state_dict(sd, true, reset_head ? head : std::set<std::string>{});
  } catch (const Error& e) {
    // Heads are Linear layers, whose engine and file layouts agree.
    std::string hint;
    for (const auto& [name, t] : m.named_parameters()) {
      auto it = sd.find(name);
      if (!reset_head && head.count(name) && it != sd.end() && it->second.shape() != t.shape()) {
        hint = "\nthe file's classifier head (" + name + " " + shape_str(it->second.shape()) +
               ") is not sized for this dataset's " + std::to_string(m.num_classes()) +
               " classes: set model.reset_head=true to train a fresh head instead of loading it";
        break;
      }
    }
    MOKD_FAIL(key, ": ", path, " does not fit ", m.name(), " with this dataset's ", m.num_classes(),
              " classes", reset_head ? " (classifier head reset)" : "", ": ", e.what(), hint);
  }
}

namespace {

// model.teacher with model.teacher_weights, frozen (eval mode) on dev; sets the SHA-256 too.
void load_teacher(const TrainConfig& cfg, Training& t) {
  const std::string& tw = cfg.model.teacher_weights;
  MOKD_CHECK(!tw.empty(),
             "model.teacher_weights: distillation needs the teacher's weights (a safetensors file "
             "with timm names, e.g. the best.safetensors of a `mokd_train teacher` run)");
  MOKD_CHECK(fs::exists(tw), "model.teacher_weights: ", tw, " does not exist");
  t.teacher = make_model(cfg.model.teacher, cfg, *t.train_set, cfg.run.seed + 1, false);
  try {
    t.teacher->load_state_dict(io::load_safetensors(tw));
  } catch (const Error& e) {
    MOKD_FAIL("model.teacher_weights: ", tw, " does not fit model.teacher = ", cfg.model.teacher,
              ": ", e.what());
  }
  t.teacher_sha256 = sha256_file(tw);
  t.teacher->to(t.device);
  t.teacher->eval();
  if (cfg.model.teacher_fold_bn) t.teacher->fold_batch_norm();
}

// Where a split's images come from, for messages: the folder (and split) a user can look at.
std::string split_source(const TrainConfig& cfg, bool train) {
  const std::string& d = cfg.data.dataset;
  std::string split = train ? "train" : "test";
  if (d == "image_folder") return cfg.data.dir + (train ? "/train" : "/val");
  if (d == "tar_shards") return tar_shards_spec(cfg, train);
  std::string dir =
      cfg.data.dir.empty() && d == "fashion_mnist" ? data::kFashionMnistDir : cfg.data.dir;
  return d + " " + split + " split in " + dir;
}

}  // namespace

// A label means the same class in both splits; checked before training, so a mismatch never
// costs an epoch.
void check_splits(const TrainConfig& cfg, const data::Dataset& train, const data::Dataset& test) {
  for (auto [ds, is_train] : {std::pair{&train, true}, std::pair{&test, false}})
    MOKD_CHECK(ds->size() > 0, "data: the ", is_train ? "training" : "test", " split (",
               split_source(cfg, is_train), ") holds no images");
  MOKD_CHECK(train.num_classes() >= 2, "data: the training split (", split_source(cfg, true),
             ") has ", train.num_classes(),
             " class(es); classification needs at least 2 (accuracy would be meaningless)");
  MOKD_CHECK(train.num_classes() == test.num_classes(), "data: the training split (",
             split_source(cfg, true), ") has ", train.num_classes(), " classes, the test split (",
             split_source(cfg, false), ") ", test.num_classes());
  const auto& a = train.class_names();
  const auto& b = test.class_names();
  if (!a.empty() && !b.empty()) {
    for (size_t i = 0; i < a.size() && i < b.size(); ++i)
      MOKD_CHECK(a[i] == b[i], "data: class ", i, " is '", a[i], "' in the training split (",
                 split_source(cfg, true), ") but '", b[i], "' in the test split (",
                 split_source(cfg, false), "): both splits need the same class names");
  }
  MOKD_CHECK(train.height() == test.height() && train.width() == test.width() &&
                 train.channels() == test.channels(),
             "data: the training split (", split_source(cfg, true), ") has ", train.height(), "x",
             train.width(), "x", train.channels(), " images, the test split (",
             split_source(cfg, false), ") ", test.height(), "x", test.width(), "x", test.channels(),
             ": both splits need one image size and channel count");
}

std::unique_ptr<Training> build_training(const TrainConfig& cfg, TrainMode mode,
                                         dist::Communicator* comm) {
  auto t = std::make_unique<Training>();
  t->mode = mode;
  if (!comm) {
    t->own_comm = dist::make_local_communicator();
    comm = t->own_comm.get();
  }
  t->comm = comm;
  const int world = comm->world();
  const int64_t accum = cfg.optim.accum_steps, micro = micro_batch_size(cfg, world);
  MOKD_CHECK(mode != TrainMode::Distill || cfg.distill.weighting != "exact2" ||
                 cfg.distill.method != "mokd" || world * accum == 1,
             "distill.weighting = exact2 needs the whole batch's two gradients in one backward: it "
             "runs on one process with optim.accum_steps = 1 (here ",
             world, " process(es) x ", accum, ")");
  t->device = resolve_device(cfg.run.device);
  apply_runtime_settings(cfg);
  t->train_set = open_dataset(cfg, true);
  t->test_set = open_dataset(cfg, false);
  check_splits(cfg, *t->train_set, *t->test_set);

  const bool distill = mode == TrainMode::Distill;
  t->model = make_model(distill ? cfg.model.student : cfg.model.teacher, cfg, *t->train_set,
                        cfg.run.seed, true);
  const std::string& init = distill ? cfg.model.student_init : cfg.model.teacher_init;
  if (!init.empty())
    load_init(*t->model, distill ? "model.student_init" : "model.teacher_init", init,
              cfg.model.reset_head);
  t->model->to(t->device);
  t->model->train();

  NamedTensors trained = t->model->named_parameters();
  if (distill) {
    load_teacher(cfg, *t);
    t->distiller = std::make_unique<Distiller>(*t->model, *t->teacher, make_distill_config(cfg));
    for (auto& p : t->distiller->projector_parameters()) trained.push_back(p);
  }
  t->optimizer = make_optimizer(cfg, trained);

  data::LoaderOptions lo = loader_options(cfg, *t->train_set, true, cfg.run.seed);
  lo.device = t->device;
  if (world * accum > 1) {
    // This process's micro-batches of every step (io/loader.h, Shard).
    lo.batch_size = micro;
    lo.shard.group = world * accum;
    lo.shard.first = comm->rank() * accum;
    lo.shard.count = accum;
  }
  t->loader = std::make_unique<data::Loader>(*t->train_set, lo);
  t->steps_per_epoch = t->loader->batches_per_epoch() / accum;
  MOKD_CHECK(t->steps_per_epoch > 0, "data: the training set (", t->train_set->size(),
             " images) yields no batch of data.batch_size = ", cfg.data.batch_size);
  t->total_steps = cfg.optim.steps > 0 ? cfg.optim.steps : cfg.optim.epochs * t->steps_per_epoch;
  t->schedule = make_schedule(cfg, t->total_steps);

  if (cfg.optim.ema_decay > 0)
    t->ema = std::make_unique<Ema>(*t->model, static_cast<float>(cfg.optim.ema_decay));
  std::vector<Tensor> params;
  for (auto& [n, p] : trained) params.push_back(p);
  t->sync = std::make_unique<GradSync>(params, *comm, accum, cfg.dist.bucket_mb);
  if (distill) {
    t->step = std::make_unique<DistillStep>(*t->distiller, *t->model, *t->optimizer, t->sync.get());
  } else {
    TeacherStepConfig tc;
    tc.label_smoothing = static_cast<float>(cfg.optim.label_smoothing);
    tc.grad_clip = static_cast<float>(cfg.optim.grad_clip);
    t->step = std::make_unique<TeacherStep>(*t->model, *t->optimizer, tc, t->sync.get());
  }
  return t;
}

}  // namespace mokd
