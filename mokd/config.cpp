// mokd_train's configuration: the table of every key (type, doc, validator), TOML and command-line
// parsing into TrainConfig, the TOML writer, the resume hash and the Markdown reference.
#include "mokd/config.h"

#include "io/randaugment.h"

#include <toml++/toml.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <type_traits>
#include <variant>
#include <vector>

#include "engine/error.h"
#include "io/sha256.h"

namespace mokd {
namespace {

// ---- values and key types -----------------------------------------------------------------------

enum class KeyType { Int, UInt, Double, Bool, String, DoubleList };
// Index i of Value holds KeyType i.
using Value = std::variant<int64_t, uint64_t, double, bool, std::string, std::vector<double>>;

const char* type_name(KeyType t) {
  switch (t) {
    case KeyType::Int:
      return "int";
    case KeyType::UInt:
      return "uint";
    case KeyType::Double:
      return "float";
    case KeyType::Bool:
      return "bool";
    case KeyType::String:
      return "string";
    case KeyType::DoubleList:
      return "list of floats";
  }
  return "?";
}

// CLI11's --help column.
const char* cli_type_name(KeyType t) {
  switch (t) {
    case KeyType::Int:
      return "INT";
    case KeyType::UInt:
      return "UINT";
    case KeyType::Double:
      return "FLOAT";
    case KeyType::Bool:
      return "BOOL";
    case KeyType::String:
      return "TEXT";
    case KeyType::DoubleList:
      return "FLOAT,...";
  }
  return "?";
}

// What a wrong-typed value is told it should have been.
std::string expected_text(KeyType t) {
  switch (t) {
    case KeyType::Int:
      return "an integer";
    case KeyType::UInt:
      return "a non-negative integer";
    case KeyType::Double:
      return "a number (float)";
    case KeyType::Bool:
      return "a boolean (true/false)";
    case KeyType::String:
      return "a string";
    case KeyType::DoubleList:
      return "a list of numbers";
  }
  return "?";
}

// Shortest decimal that reads back to the same double, always with a '.' or exponent so that
// TOML reads it as a float.
std::string format_double(double d) {
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d);
  std::string s(buf, r.ptr);
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";  // 'n': inf/nan stay as they are
  return s;
}

std::string toml_quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// A value in TOML syntax (also used in messages and in --help defaults).
std::string format_value(const Value& v) {
  switch (v.index()) {
    case 0:
      return std::to_string(std::get<int64_t>(v));
    case 1:
      return std::to_string(std::get<uint64_t>(v));
    case 2:
      return format_double(std::get<double>(v));
    case 3:
      return std::get<bool>(v) ? "true" : "false";
    case 4:
      return toml_quote(std::get<std::string>(v));
    default: {
      const auto& l = std::get<std::vector<double>>(v);
      std::string s = "[";
      for (size_t i = 0; i < l.size(); ++i) s += (i ? ", " : "") + format_double(l[i]);
      return s + "]";
    }
  }
}

// ---- validators
// -----------------------------------------------------------------------------------

struct Check {
  std::function<bool(const Value&)> ok;  // empty: any value of the right type
  std::string rule;                      // "> 0", "in [0, 1)", "one of: a, b" (messages, docs)
};

double num(const Value& v) {
  if (v.index() == 0) return static_cast<double>(std::get<int64_t>(v));
  if (v.index() == 1) return static_cast<double>(std::get<uint64_t>(v));
  return std::get<double>(v);
}

std::string fmt_num(double x) {
  std::string s = format_double(x);
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ".0") == 0) s.resize(s.size() - 2);
  return s;
}

Check ge(double lo) {
  return {[lo](const Value& v) { return num(v) >= lo; }, ">= " + fmt_num(lo)};
}
Check gt(double lo) {
  return {[lo](const Value& v) { return num(v) > lo; }, "> " + fmt_num(lo)};
}
// [lo, hi) or [lo, hi]
Check in_range(double lo, double hi, bool hi_closed) {
  return {[=](const Value& v) {
            double x = num(v);
            return x >= lo && (hi_closed ? x <= hi : x < hi);
          },
          "in [" + fmt_num(lo) + ", " + fmt_num(hi) + (hi_closed ? "]" : ")")};
}
Check unit_closed() { return in_range(0, 1, true); }
Check unit_open() { return in_range(0, 1, false); }

Check one_of(std::vector<std::string> choices) {
  std::string rule = "one of: ";
  for (size_t i = 0; i < choices.size(); ++i) rule += (i ? ", " : "") + choices[i];
  return {[choices](const Value& v) {
            const auto& s = std::get<std::string>(v);
            return std::find(choices.begin(), choices.end(), s) != choices.end();
          },
          rule};
}

Check one_of_int(std::vector<int64_t> choices) {
  std::string rule = "one of: ";
  for (size_t i = 0; i < choices.size(); ++i) rule += (i ? ", " : "") + std::to_string(choices[i]);
  return {[choices](const Value& v) {
            return std::find(choices.begin(), choices.end(), std::get<int64_t>(v)) != choices.end();
          },
          rule};
}

// "" or a RandAugment string timm accepts (io/randaugment.h's grammar).
Check rand_augment_spec() {
  return {[](const Value& v) {
            const auto& s = std::get<std::string>(v);
            if (s.empty()) return true;
            try {
              data::parse_rand_augment(s, "data.auto_augment");
              return true;
            } catch (const Error&) {
              return false;
            }
          },
          "\"\" (off) or a timm RandAugment string: rand then -m<int> -n<int> -p<float> "
          "-mstd<float> -mmax<int> -inc<0|1>, e.g. rand-m9-mstd0.5-inc1"};
}

Check non_empty() {
  return {[](const Value& v) { return !std::get<std::string>(v).empty(); }, "not empty"};
}

Check device_name() {
  return {[](const Value& v) {
            const auto& s = std::get<std::string>(v);
            if (s == "auto" || s == "cpu" || s == "cuda") return true;
            if (s.rfind("cuda:", 0) != 0 || s.size() == 5 || s.size() > 8) return false;
            return std::all_of(s.begin() + 5, s.end(), [](char c) { return c >= '0' && c <= '9'; });
          },
          "one of: auto, cpu, cuda, cuda:N"};
}

// Per-channel normalisation: 0 (dataset statistics), 1 (all channels) or 3 values.
Check channel_list(bool positive) {
  return {[positive](const Value& v) {
            const auto& l = std::get<std::vector<double>>(v);
            if (l.size() != 0 && l.size() != 1 && l.size() != 3) return false;
            return std::all_of(l.begin(), l.end(), [&](double x) { return !positive || x > 0; });
          },
          positive ? "0, 1 or 3 values, each > 0" : "0, 1 or 3 values"};
}

Check non_negative_list() {
  return {[](const Value& v) {
            const auto& l = std::get<std::vector<double>>(v);
            return std::all_of(l.begin(), l.end(), [](double x) { return x >= 0; });
          },
          "each >= 0"};
}

// ---- the key table
// --------------------------------------------------------------------------------

struct Key {
  std::string name;     // "optim.lr"
  std::string section;  // "optim"
  std::string field;    // "lr"
  KeyType type;
  std::string doc;
  Check check;
  int64_t int_min = std::numeric_limits<int64_t>::min();  // representable range of int fields
  int64_t int_max = std::numeric_limits<int64_t>::max();
  std::function<Value(const TrainConfig&)> get;
  std::function<void(TrainConfig&, const Value&)> set;
};

template <class T>
constexpr KeyType key_type_of() {
  if constexpr (std::is_same_v<T, bool>)
    return KeyType::Bool;
  else if constexpr (std::is_same_v<T, uint64_t>)
    return KeyType::UInt;
  else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>)
    return KeyType::Int;
  else if constexpr (std::is_same_v<T, double>)
    return KeyType::Double;
  else if constexpr (std::is_same_v<T, std::string>)
    return KeyType::String;
  else if constexpr (std::is_same_v<T, std::vector<double>>)
    return KeyType::DoubleList;
  else
    static_assert(!sizeof(T), "config: unsupported field type");
}

template <class S, class T>
Key key(const char* name, S TrainConfig::*sec, T S::*field, const char* doc, Check check = {}) {
  Key k;
  k.name = name;
  auto dot = k.name.find('.');
  k.section = k.name.substr(0, dot);
  k.field = k.name.substr(dot + 1);
  k.type = key_type_of<T>();
  k.doc = doc;
  k.check = std::move(check);
  if constexpr (key_type_of<T>() == KeyType::Int) {
    k.int_min = std::numeric_limits<T>::min();
    k.int_max = std::numeric_limits<T>::max();
  }
  if constexpr (std::is_same_v<T, uint64_t>) {
    k.int_min = 0;
    k.int_max = std::numeric_limits<int64_t>::max();  // TOML integers are int64
  }
  k.get = [sec, field](const TrainConfig& c) -> Value {
    const T& x = c.*sec.*field;
    if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, uint64_t> ||
                  std::is_same_v<T, double> || std::is_same_v<T, std::string> ||
                  std::is_same_v<T, std::vector<double>>)
      return Value(x);
    else
      return Value(static_cast<int64_t>(x));
  };
  k.set = [sec, field](TrainConfig& c, const Value& v) {
    T& x = c.*sec.*field;
    if constexpr (std::is_same_v<T, bool> || std::is_same_v<T, uint64_t> ||
                  std::is_same_v<T, double> || std::is_same_v<T, std::string> ||
                  std::is_same_v<T, std::vector<double>>)
      x = std::get<T>(v);
    else
      x = static_cast<T>(std::get<int64_t>(v));  // range checked by the caller (int_min/int_max)
  };
  return k;
}

const std::vector<Key>& keys() {
  using C = TrainConfig;
  static const std::vector<Key> table = {
      // [run]
      key("run.out_dir", &C::run, &RunConfig::out_dir,
          "run folder: checkpoints, metrics, the resolved config (\"\" = "
          "runs/<subcommand>-<trained model>, e.g. runs/teacher-resnet_fmnist_small)"),
      key("run.seed", &C::run, &RunConfig::seed,
          "seed of every random stream (init, data order, augmentation, dropout)"),
      key("run.device", &C::run, &RunConfig::device, "where to train (auto = cuda when available)",
          device_name()),
      key("run.precision", &C::run, &RunConfig::precision,
          "f32, or bf16 activations end to end with f32 math inside each kernel (products "
          "accumulate in f32; master weights, their gradients, optimizer state, norm statistics, "
          "losses and FAMO stay f32)",
          one_of({"f32", "bf16"})),
      key("run.threads", &C::run, &RunConfig::threads, "OpenMP threads on the CPU (0 = all cores)",
          ge(0)),
      key("run.resume", &C::run, &RunConfig::resume,
          "continue from out_dir/checkpoints/state.safetensors"),
      key("run.stop_after", &C::run, &RunConfig::stop_after,
          "> 0: checkpoint and stop this invocation after N steps", ge(0)),
      key("run.overwrite", &C::run, &RunConfig::overwrite,
          "a fresh run (no --run.resume) may replace the run already in out_dir (its "
          "config.toml, metrics and checkpoints); without it such a folder is refused"),
      // [data]
      key("data.dataset", &C::data, &DataConfig::dataset, "dataset",
          one_of({"fashion_mnist", "cifar10", "cifar100", "image_folder", "tar_shards"})),
      key("data.dir", &C::data, &DataConfig::dir,
          "dataset folder (\"\" = the dataset's default location)"),
      key("data.train_shards", &C::data, &DataConfig::train_shards,
          "tar_shards: the training shards, a folder of .tar files or a pattern such as "
          "train-{000000..001023}.tar (\"\" = data.dir/train)"),
      key("data.val_shards", &C::data, &DataConfig::val_shards,
          "tar_shards: the validation shards, as data.train_shards (\"\" = data.dir/val)"),
      key("data.image_size", &C::data, &DataConfig::image_size,
          "the model's input side: image files are cropped and resized to it (required for "
          "image_folder and tar_shards); 0 = the split's own size",
          in_range(0, 4096, true)),
      key("data.batch_size", &C::data, &DataConfig::batch_size, "training batch size", ge(1)),
      key("data.eval_batch_size", &C::data, &DataConfig::eval_batch_size, "evaluation batch size",
          ge(1)),
      key("data.workers", &C::data, &DataConfig::workers,
          "loader threads (0 = build batches in the training thread)", ge(0)),
      key("data.prefetch", &C::data, &DataConfig::prefetch, "batches built ahead of the trainer",
          ge(1)),
      key("data.pin_memory", &C::data, &DataConfig::pin_memory,
          "on a GPU, the loader writes training batches into pinned host memory and the upload "
          "reads them by DMA, without a staging copy (PyTorch's pin_memory); off: pageable "
          "buffers staged by the backend"),
      key("data.train_limit", &C::data, &DataConfig::train_limit,
          "use only the first N training images (0 = all)", ge(0)),
      key("data.eval_limit", &C::data, &DataConfig::eval_limit,
          "evaluate on the first N test images (0 = all)", ge(0)),
      key("data.crop_padding", &C::data, &DataConfig::crop_padding,
          "random crop with this zero padding (-1 = dataset default, 0 = no crop)", ge(-1)),
      key("data.hflip", &C::data, &DataConfig::hflip, "random horizontal flips"),
      key("data.random_resized_crop", &C::data, &DataConfig::random_resized_crop,
          "RandomResizedCrop on the original image (timm's train transform)"),
      key("data.scale_min", &C::data, &DataConfig::scale_min,
          "RandomResizedCrop: smallest area fraction (timm --scale)", in_range(1e-6, 1, true)),
      key("data.scale_max", &C::data, &DataConfig::scale_max,
          "RandomResizedCrop: largest area fraction (timm --scale)", in_range(1e-6, 1, true)),
      key("data.ratio_min", &C::data, &DataConfig::ratio_min,
          "RandomResizedCrop: smallest aspect ratio w/h (timm --ratio)", in_range(1e-3, 1e3, true)),
      key("data.ratio_max", &C::data, &DataConfig::ratio_max,
          "RandomResizedCrop: largest aspect ratio w/h (timm --ratio)", in_range(1e-3, 1e3, true)),
      key("data.interpolation", &C::data, &DataConfig::interpolation,
          "resampling of every resize, Pillow's (timm --interpolation)",
          one_of({"bicubic", "bilinear", "nearest"})),
      key("data.auto_augment", &C::data, &DataConfig::auto_augment,
          "RandAugment after crop and flip (timm --aa; DeiT: rand-m9-mstd0.5-inc1)",
          rand_augment_spec()),
      key("data.color_jitter", &C::data, &DataConfig::color_jitter,
          "brightness/contrast/saturation jitter when auto_augment is off (timm --color-jitter; 0 "
          "= off)",
          in_range(0, 10, true)),
      key("data.reprob", &C::data, &DataConfig::reprob,
          "random erasing probability, after normalisation (timm --reprob; DeiT 0.25)",
          unit_closed()),
      key("data.remode", &C::data, &DataConfig::remode, "random erasing fill (timm --remode)",
          one_of({"pixel", "rand", "const"})),
      key("data.recount", &C::data, &DataConfig::recount,
          "random erasing boxes per image (timm --recount)", in_range(1, 32, true)),
      key("data.aug_repeats", &C::data, &DataConfig::aug_repeats,
          "repeated augmentation: each image this many times per epoch, timm's RepeatAugSampler "
          "(timm --aug-repeats; DeiT 3; 0 or 1 = off)",
          in_range(0, 16, true)),
      key("data.crop_pct", &C::data, &DataConfig::crop_pct,
          "evaluation of image files: resize the shorter side to image_size / crop_pct, then "
          "centre crop (timm --crop-pct)",
          in_range(0.05, 1, true)),
      key("data.bad_samples", &C::data, &DataConfig::bad_samples,
          "a file that cannot be read or decoded: fatal (stop, naming it) or skip (the next "
          "sample stands in; each is reported on stderr and counted)",
          one_of({"fatal", "skip"})),
      key("data.mixup_alpha", &C::data, &DataConfig::mixup_alpha,
          "mixup Beta(alpha, alpha) (0 = off)", ge(0)),
      key("data.cutmix_alpha", &C::data, &DataConfig::cutmix_alpha,
          "cutmix Beta(alpha, alpha) (0 = off)", ge(0)),
      key("data.mixup_prob", &C::data, &DataConfig::mixup_prob, "probability of mixing a batch",
          unit_closed()),
      key("data.mixup_switch_prob", &C::data, &DataConfig::mixup_switch_prob,
          "probability of cutmix instead of mixup when both are on", unit_closed()),
      key("data.mean", &C::data, &DataConfig::mean,
          "normalisation mean per channel ([] = the dataset's statistics)", channel_list(false)),
      key("data.std", &C::data, &DataConfig::std,
          "normalisation std per channel ([] = the dataset's statistics)", channel_list(true)),
      // [model]
      key("model.student", &C::model, &ModelConfig::student,
          "student architecture (a registry name)", non_empty()),
      key("model.teacher", &C::model, &ModelConfig::teacher,
          "teacher architecture (a registry name)", non_empty()),
      key("model.teacher_weights", &C::model, &ModelConfig::teacher_weights,
          "teacher safetensors, timm names, e.g. the checkpoints/best.safetensors of a `mokd_train "
          "teacher` run; distill needs it (\"\" is refused), teacher ignores it"),
      key("model.student_init", &C::model, &ModelConfig::student_init,
          "optional safetensors to start the student from"),
      key("model.teacher_init", &C::model, &ModelConfig::teacher_init,
          "optional safetensors (timm names) to start `mokd_train teacher` from, e.g. an ImageNet "
          "checkpoint to fine-tune; strict load (see model.reset_head); distill ignores it"),
      key("model.reset_head", &C::model, &ModelConfig::reset_head,
          "model.teacher_init / model.student_init: leave the classifier head freshly initialised "
          "for the dataset's classes instead of loading the file's; every other tensor still loads "
          "strictly"),
      key("model.teacher_fold_bn", &C::model, &ModelConfig::teacher_fold_bn,
          "distill: fold the frozen teacher's batch norms into its convolutions' weights and "
          "biases when it is loaded (equal up to f32 rounding; one pass fewer after every "
          "convolution); false runs them as separate eval-mode batch norms"),
      key("model.drop_path_rate", &C::model, &ModelConfig::drop_path_rate,
          "student stochastic depth rate", unit_open()),
      key("model.drop_rate", &C::model, &ModelConfig::drop_rate, "student dropout rate",
          unit_open()),
      // [optim]
      key("optim.optimizer", &C::optim, &OptimConfig::optimizer, "optimizer",
          one_of({"adamw", "sgd"})),
      key("optim.epochs", &C::optim, &OptimConfig::epochs, "training epochs", ge(0)),
      key("optim.steps", &C::optim, &OptimConfig::steps,
          "> 0: stop after this many steps (overrides epochs)", ge(0)),
      key("optim.lr", &C::optim, &OptimConfig::lr, "peak learning rate", gt(0)),
      key("optim.min_lr", &C::optim, &OptimConfig::min_lr,
          "learning rate at the end of the cosine schedule", ge(0)),
      key("optim.warmup_steps", &C::optim, &OptimConfig::warmup_steps, "linear warmup steps",
          ge(0)),
      key("optim.warmup_lr", &C::optim, &OptimConfig::warmup_lr,
          "learning rate at the start of warmup", ge(0)),
      key("optim.weight_decay", &C::optim, &OptimConfig::weight_decay, "weight decay", ge(0)),
      key("optim.momentum", &C::optim, &OptimConfig::momentum, "sgd momentum", unit_open()),
      key("optim.nesterov", &C::optim, &OptimConfig::nesterov, "sgd Nesterov momentum"),
      key("optim.grad_clip", &C::optim, &OptimConfig::grad_clip,
          "clip the global gradient norm (0 = off)", ge(0)),
      key("optim.accum_steps", &C::optim, &OptimConfig::accum_steps,
          "micro-batches per process and step (gradient accumulation): data.batch_size is split "
          "over processes x accum_steps",
          ge(1)),
      key("optim.label_smoothing", &C::optim, &OptimConfig::label_smoothing,
          "label smoothing of the task loss", unit_open()),
      key("optim.ema_decay", &C::optim, &OptimConfig::ema_decay,
          "> 0: keep an EMA of the student and evaluate it too", unit_open()),
      // [distill]
      key("distill.method", &C::distill, &DistillKeys::method, "distillation method",
          one_of({"none", "kd", "deit-hard", "vkd", "mokd"})),
      key("distill.num_objectives", &C::distill, &DistillKeys::num_objectives,
          "mokd objectives: 3 = task, kl, feat; 2 = task, kl + feat", one_of_int({2, 3})),
      key("distill.weighting", &C::distill, &DistillKeys::weighting,
          "mokd objective weighting (exact2: K = 2 only)", one_of({"famo", "fixed", "exact2"})),
      key("distill.fixed_weights", &C::distill, &DistillKeys::fixed_weights,
          "weighting = fixed: one weight per objective ([] = all ones)", non_negative_list()),
      key("distill.temperature", &C::distill, &DistillKeys::temperature, "distillation temperature",
          gt(0)),
      key("distill.kd_alpha", &C::distill, &DistillKeys::kd_alpha,
          "kd: weight of the distillation loss", unit_closed()),
      key("distill.projector", &C::distill, &DistillKeys::projector, "feature projector",
          one_of({"stiefel", "bilinear"})),
      key("distill.bilinear_rank", &C::distill, &DistillKeys::bilinear_rank,
          "bilinear projector rank (0 = full)", ge(0)),
      key("distill.student_feature", &C::distill, &DistillKeys::student_feature,
          "student feature for the feature loss",
          one_of({"auto", "mean_patch", "cls", "dist", "pooled"})),
      key("distill.teacher_feature", &C::distill, &DistillKeys::teacher_feature,
          "teacher feature for the feature loss",
          one_of({"auto", "mean_patch", "cls", "dist", "pooled"})),
      key("distill.famo_lr", &C::distill, &DistillKeys::famo_lr, "FAMO weight-logit learning rate",
          gt(0)),
      key("distill.famo_weight_decay", &C::distill, &DistillKeys::famo_weight_decay,
          "FAMO weight-logit decay", ge(0)),
      key("distill.diagnostics_every", &C::distill, &DistillKeys::diagnostics_every,
          "steps between gradient-conflict diagnostics (0 = off)", ge(0)),
      // [log]
      key("log.log_every", &C::log, &LogConfig::log_every,
          "steps between progress lines (metrics.csv/jsonl get a row every step)", ge(1)),
      key("log.eval_every", &C::log, &LogConfig::eval_every,
          "epochs between evaluations (0 = only at the end)", ge(0)),
      key("log.checkpoint_every", &C::log, &LogConfig::checkpoint_every,
          "steps between checkpoints (0 = at each evaluation)", ge(0)),
      // [dist]
      key("dist.backend", &C::dist, &DistConfig::backend,
          "communicator of a data-parallel run: auto (nccl on GPUs when built, else mpi; one "
          "process: none), local, mpi, nccl",
          one_of({"auto", "local", "mpi", "nccl"})),
      key("dist.rank", &C::dist, &DistConfig::rank,
          "this process's rank (-1 = from torchrun's RANK, OMPI_COMM_WORLD_RANK, PMI_RANK or "
          "SLURM_PROCID)",
          ge(-1)),
      key("dist.world_size", &C::dist, &DistConfig::world_size,
          "number of processes (-1 = from the launcher)", ge(-1)),
      key("dist.local_rank", &C::dist, &DistConfig::local_rank,
          "rank on this node; picks the GPU (-1 = from the launcher)", ge(-1)),
      key("dist.master_addr", &C::dist, &DistConfig::master_addr,
          "rank 0's host for NCCL's rendezvous without MPI (\"\" = MASTER_ADDR)"),
      key("dist.master_port", &C::dist, &DistConfig::master_port,
          "rank 0's port for that rendezvous (-1 = MASTER_PORT)", ge(-1)),
      key("dist.timeout_s", &C::dist, &DistConfig::timeout_s,
          "seconds a collective may wait for the other ranks before the run stops with an error",
          gt(0)),
      key("dist.bucket_mb", &C::dist, &DistConfig::bucket_mb,
          "size of the gradient all-reduce buckets in MiB (the first bucket 1 MiB)", gt(0)),
      // [bench]
      key("bench.steps", &C::bench, &BenchConfig::steps, "timed steps", ge(1)),
      key("bench.warmup", &C::bench, &BenchConfig::warmup, "untimed warmup steps", ge(0)),
      key("bench.batch_size", &C::bench, &BenchConfig::batch_size, "benchmark batch size", ge(1)),
  };
  return table;
}

const Key* find_key(const std::string& name) {
  for (const auto& k : keys())
    if (k.name == name) return &k;
  return nullptr;
}

std::vector<std::string> sections() {
  std::vector<std::string> out;
  for (const auto& k : keys())
    if (std::find(out.begin(), out.end(), k.section) == out.end()) out.push_back(k.section);
  return out;
}

// Keys that may change across --resume: left out of config_hash.
bool resume_safe(const Key& k) {
  static const char* names[] = {
      "run.out_dir",  "run.resume",   "run.stop_after",   "run.overwrite",    "run.device",
      "run.threads",  "data.workers", "data.prefetch",    "data.bad_samples", "data.pin_memory",
      "optim.epochs", "optim.steps",  "optim.accum_steps"};
  if (k.section == "log" || k.section == "dist") return true;
  return std::any_of(std::begin(names), std::end(names),
                     [&](const char* n) { return k.name == n; });
}

// ---- did you mean
// ---------------------------------------------------------------------------------

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// " (did you mean 'x'?)" for the closest candidate, or "" when nothing is close.
std::string suggest(const std::string& given, const std::vector<std::string>& candidates) {
  std::string field = given.substr(given.find('.') == std::string::npos ? 0 : given.find('.') + 1);
  std::string best;
  size_t best_d = SIZE_MAX;
  for (const auto& c : candidates) {
    size_t d = edit_distance(given, c);
    // The right field in the wrong section (optim.temperature -> distill.temperature).
    auto dot = c.find('.');
    if (dot != std::string::npos && c.substr(dot + 1) == field) d = std::min<size_t>(d, 1);
    if (d < best_d) best_d = d, best = c;
  }
  if (best.empty() || best_d > std::max<size_t>(2, given.size() / 3)) return "";
  return " (did you mean '" + best + "'?)";
}

std::vector<std::string> key_names() {
  std::vector<std::string> out;
  for (const auto& k : keys()) out.push_back(k.name);
  return out;
}

// ---- setting a value
// -------------------------------------------------------------------------------

// Range of int fields, then the key's validator; `where` prefixes the message ("config F: " or
// "command line: ").
void check_and_set(TrainConfig& c, const Key& k, const Value& v, const std::string& where) {
  if (k.type == KeyType::Int || k.type == KeyType::UInt) {
    bool in = v.index() == 0
                  ? (std::get<int64_t>(v) >= k.int_min && std::get<int64_t>(v) <= k.int_max)
                  : std::get<uint64_t>(v) <= static_cast<uint64_t>(k.int_max);
    MOKD_CHECK(in, where, "key '", k.name, "' expects ", expected_text(k.type), " in [", k.int_min,
               ", ", k.int_max, "], got ", format_value(v));
  }
  if (k.type == KeyType::Double)
    MOKD_CHECK(std::isfinite(std::get<double>(v)), where, "key '", k.name,
               "' expects a finite number, got ", format_value(v));
  if (k.type == KeyType::DoubleList)
    for (double x : std::get<std::vector<double>>(v))
      MOKD_CHECK(std::isfinite(x), where, "key '", k.name, "' expects finite numbers, got ",
                 format_value(v));
  if (k.check.ok)
    MOKD_CHECK(k.check.ok(v), where, "key '", k.name, "' must be ", k.check.rule, ", got ",
               format_value(v));
  k.set(c, v);
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

template <class T>
bool parse_number(std::string s, T& out) {
  s = trim(s);
  if (!s.empty() && s[0] == '+') s.erase(0, 1);
  if (s.empty()) return false;
  auto r = std::from_chars(s.data(), s.data() + s.size(), out);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}

// A command-line string as the key's type.
Value parse_text(const Key& k, const std::string& text) {
  auto bad = [&]() {
    MOKD_FAIL("command line: key '", k.name, "' (--", k.name, ") expects ", expected_text(k.type),
              ", got '", text, "'");
  };
  switch (k.type) {
    case KeyType::Int: {
      int64_t x;
      if (!parse_number(text, x)) bad();
      return x;
    }
    case KeyType::UInt: {
      uint64_t x;
      if (!parse_number(text, x)) bad();
      return x;
    }
    case KeyType::Double: {
      double x;
      if (!parse_number(text, x)) bad();
      return x;
    }
    case KeyType::Bool: {
      std::string s = trim(text);
      std::transform(s.begin(), s.end(), s.begin(),
                     [](unsigned char c) { return std::tolower(c); });
      if (s == "" || s == "true" || s == "1" || s == "yes" || s == "on")
        return true;  // "": --flag alone
      if (s == "false" || s == "0" || s == "no" || s == "off") return false;
      bad();
      return false;
    }
    case KeyType::String:
      return text;
    case KeyType::DoubleList: {
      // "0.5,0.4,0.3" or "[0.5, 0.4, 0.3]"; "" and "[]" are the empty list.
      std::string s = trim(text);
      if (!s.empty() && s.front() == '[') {
        if (s.back() != ']') bad();
        s = trim(s.substr(1, s.size() - 2));
      }
      std::vector<double> l;
      if (s.empty()) return l;
      std::stringstream ss(s);
      std::string item;
      while (std::getline(ss, item, ',')) {
        double x;
        if (!parse_number(item, x)) bad();
        l.push_back(x);
      }
      if (s.back() == ',') bad();
      return l;
    }
  }
  return {};
}

const char* toml_type_name(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::table:
      return "a table";
    default:
      return "a date/time";
  }
}

// A TOML node as the key's type (integers are accepted for floats).
Value parse_node(const Key& k, const toml::node& n, const std::string& where) {
  auto bad = [&](const char* what) {
    MOKD_FAIL(where, "key '", k.name, "' expects ", expected_text(k.type), ", got ", what);
  };
  switch (k.type) {
    case KeyType::Int:
      if (!n.is_integer()) bad(toml_type_name(n));
      return n.as_integer()->get();
    case KeyType::UInt:
      if (!n.is_integer()) bad(toml_type_name(n));
      if (n.as_integer()->get() < 0) bad("a negative integer");
      return static_cast<uint64_t>(n.as_integer()->get());
    case KeyType::Double:
      if (n.is_integer()) return static_cast<double>(n.as_integer()->get());
      if (!n.is_floating_point()) bad(toml_type_name(n));
      return n.as_floating_point()->get();
    case KeyType::Bool:
      if (!n.is_boolean()) bad(toml_type_name(n));
      return n.as_boolean()->get();
    case KeyType::String:
      if (!n.is_string()) bad(toml_type_name(n));
      return n.as_string()->get();
    case KeyType::DoubleList: {
      if (!n.is_array()) bad(toml_type_name(n));
      std::vector<double> l;
      for (const auto& e : *n.as_array()) {
        if (e.is_integer())
          l.push_back(static_cast<double>(e.as_integer()->get()));
        else if (e.is_floating_point())
          l.push_back(e.as_floating_point()->get());
        else
          bad((std::string("an array holding ") + toml_type_name(e)).c_str());
      }
      return l;
    }
  }
  return {};
}

// TOML 1.0 allows non-ASCII text only inside strings and comments, and toml++ 3.3 reaches
// undefined behaviour classifying some such characters anywhere else (its whitespace table misses
// U+00A1..U+0499 and others; found by fuzz/config_fuzz.cpp). So a non-ASCII byte outside strings
// and comments is refused, with its place, before the document gets to the parser. A scan of the
// string and comment delimiters only (the parser proper is toml++'s), which follows TOML's
// grammar as far as where a string may begin: a quote opens a string only where a key or a value
// can start, i.e. at a key's start (a line's first token, after a table header's '[', a dotted
// key's '.', an inline table's '{' or ','), or at a value's start (after '=', an array's '[' or
// ',', a new line inside an array); a multi-line string only right after '='. A '.' inside a
// value (a float such as `0.`) opens nothing. So the scan's strings are always strings to toml++
// too, and a malformed document cannot hide text from the scan inside a "string" that toml++
// does not see.
void reject_non_ascii_outside_strings(const std::string& t, const std::string& name) {
  enum class In { Code, Comment, Basic, Literal, MultiBasic, MultiLiteral } in = In::Code;
  // The brackets open in a value: an array, or an inline table (keys, then after '=' a value).
  struct Frame {
    bool inline_table;
    bool value;  // inline table: after its key's '='
  };
  std::vector<Frame> nest;
  bool top_value = false;  // at depth 0: after the line's '='
  bool header = false;     // inside a [table] or [[array-of-tables]] header
  auto key_context = [&] {
    if (header) return true;
    if (nest.empty()) return !top_value;
    return nest.back().inline_table && !nest.back().value;
  };
  auto value_context = [&] {
    if (nest.empty()) return top_value && !header;
    return !nest.back().inline_table || nest.back().value;
  };
  auto at = [&](size_t i, const char* d) { return t.compare(i, std::strlen(d), d) == 0; };
  int64_t line = 1, col = 0;
  auto escape = [&](size_t i) {
    if (i + 1 < t.size() && static_cast<unsigned char>(t[i + 1]) >= 0x80)
      MOKD_FAIL("config ", name, ":", line, ":", col + 1,
                ": a non-ASCII character after a backslash (not a TOML escape)");
  };
  // Whether a string may begin after `prev`, the last character of code outside whitespace
  // ('\n': none yet on this line).
  auto string_may_start = [&](char prev) {
    switch (prev) {
      case '\n':
        return nest.empty() ? !top_value : !nest.back().inline_table;  // multi-line arrays
      case '=':
        return value_context();
      case '[':
        return header || (!nest.empty() && !nest.back().inline_table);
      case ',':
        return !nest.empty();
      case '{':
        return !nest.empty() && nest.back().inline_table;
      case '.':
        return key_context();
      default:
        return false;
    }
  };
  char prev = '\n';
  for (size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    ++col;
    if (c == '\n') {
      ++line;
      col = 0;
      if (in == In::Comment || in == In::Basic || in == In::Literal) in = In::Code;
      if (in == In::Code) {
        prev = '\n';
        if (nest.empty()) top_value = header = false;
      }
      continue;
    }
    switch (in) {
      case In::Code: {
        if (c == ' ' || c == '\t') break;
        const char prev_code = prev;
        prev = c;
        if (c == '#') {
          in = In::Comment;
        } else if (c == '"' || c == '\'') {
          if (!string_may_start(prev_code)) break;  // not a string: toml++ reports the syntax
          prev = 's';                               // after a string's end no other string begins
          if (at(i, "\"\"\"") || at(i, "'''")) {
            // Multi-line strings are values only: right after '='. Elsewhere the quotes stay
            // code, and toml++ reports the syntax.
            if (prev_code == '=') in = c == '"' ? In::MultiBasic : In::MultiLiteral;
            i += 2, col += 2;
          } else {
            in = c == '"' ? In::Basic : In::Literal;
          }
        } else if (static_cast<unsigned char>(c) >= 0x80) {
          MOKD_FAIL("config ", name, ":", line, ":", col,
                    ": a non-ASCII character outside a string or comment (TOML keys and syntax are "
                    "ASCII)");
        } else if (c == '=') {
          // A key's '=' only where a key ended; elsewhere it opens nothing (prev: junk).
          if (!key_context() || header || std::strchr("\n=[,{.", prev_code))
            prev = 'x';
          else if (nest.empty())
            top_value = true;
          else
            nest.back().value = true;
        } else if (c == '[') {
          // A table header at a line's start, or an array where a value starts; any other '['
          // opens nothing, so no string may follow it.
          const bool value_start =
              (prev_code == '=' && value_context()) ||
              (!nest.empty() && !nest.back().inline_table && std::strchr("\n[,", prev_code));
          if (nest.empty() && !top_value && (prev_code == '\n' || (header && prev_code == '[')))
            header = true;
          else if (value_start)
            nest.push_back({false, false});
          else
            prev = 'x';
        } else if (c == ']') {
          if (!nest.empty() && !nest.back().inline_table)
            nest.pop_back();
          else if (header && !(i + 1 < t.size() && t[i + 1] == ']'))
            header = false, prev = 'h';
        } else if (c == '{') {
          const bool value_start =
              (prev_code == '=' && value_context()) ||
              (!nest.empty() && !nest.back().inline_table && std::strchr("\n[,", prev_code));
          if (value_start)
            nest.push_back({true, false});
          else
            prev = 'x';
        } else if (c == '}') {
          if (!nest.empty() && nest.back().inline_table) nest.pop_back();
        } else if (c == ',') {
          // A separator only inside brackets and after an element.
          if (nest.empty() || std::strchr("\n[,{", prev_code))
            prev = 'x';
          else if (nest.back().inline_table)
            nest.back().value = false;
        }
        break;
      }
      case In::Comment:
        break;
      case In::Basic:
        if (c == '\\') {  // an escape: an ASCII character follows (toml++ misreads others)
          escape(i);
          ++i, ++col;
        } else if (c == '"') {
          in = In::Code;
        }
        break;
      case In::Literal:
        if (c == '\'') in = In::Code;
        break;
      case In::MultiBasic:
        if (c == '\\') {
          escape(i);
          // A line-ending backslash: toml++ skips the whitespace and newlines that follow and
          // classifies the next character, which must be ASCII (its classifier misreads others).
          size_t j = i + 1;
          while (j < t.size() && (t[j] == ' ' || t[j] == '\t' || t[j] == '\r')) ++j;
          if (j < t.size() && t[j] == '\n') {
            while (j < t.size() && std::strchr(" \t\r\n", t[j]) && t[j] != '\0') ++j;
            if (j < t.size() && static_cast<unsigned char>(t[j]) >= 0x80)
              MOKD_FAIL("config ", name, ":", line, ":", col,
                        ": a non-ASCII character after a line-ending backslash (the string "
                        "continues with the next non-space character, which must be ASCII here)");
          }
        }
        if (c == '\\' && i + 1 < t.size() && t[i + 1] != '\n')
          ++i, ++col;
        else if (at(i, "\"\"\""))
          in = In::Code, i += 2, col += 2;
        break;
      case In::MultiLiteral:
        if (at(i, "'''")) in = In::Code, i += 2, col += 2;
        break;
    }
  }
}

void apply_toml(TrainConfig& c, const std::string& text, const std::string& name) {
  const std::string where = "config " + name + ": ";
  reject_non_ascii_outside_strings(text, name);
  toml::table root;
  try {
    root = toml::parse(text, name);
  } catch (const toml::parse_error& e) {
    MOKD_FAIL("config ", name, ":", e.source().begin.line, ":", e.source().begin.column, ": ",
              e.description());
  }
  const auto secs = sections();
  const auto names = key_names();
  for (const auto& [skey, snode] : root) {
    std::string s(skey.str());
    bool known = std::find(secs.begin(), secs.end(), s) != secs.end();
    if (!known) {
      if (snode.is_table()) MOKD_FAIL(where, "unknown table [", s, "]", suggest(s, secs));
      MOKD_FAIL(where, "unknown key '", s, "'", suggest(s, names),
                "; keys belong in their table ([run], [data], ...)");
    }
    if (!snode.is_table())
      MOKD_FAIL(where, "'", s, "' must be a table [", s, "], got ", toml_type_name(snode));
    for (const auto& [fkey, fnode] : *snode.as_table()) {
      std::string full = s + "." + std::string(fkey.str());
      const Key* k = find_key(full);
      if (!k) MOKD_FAIL(where, "unknown key '", full, "'", suggest(full, names));
      check_and_set(c, *k, parse_node(*k, fnode, where), where);
    }
  }
}

void apply_overrides(TrainConfig& c, const std::map<std::string, std::string>& overrides) {
  for (const auto& [name, text] : overrides) {
    const Key* k = find_key(name);
    if (!k) MOKD_FAIL("command line: unknown config key '", name, "'", suggest(name, key_names()));
    check_and_set(c, *k, parse_text(*k, text), "command line: ");
  }
}

std::string default_text(const Key& k) {
  static const TrainConfig defaults{};
  return format_value(k.get(defaults));
}

}  // namespace

// ---- public API
// -----------------------------------------------------------------------------------

void validate_config(const TrainConfig& c) {
  TrainConfig scratch;
  for (const auto& k : keys()) check_and_set(scratch, k, k.get(c), "config: ");
  // Rules that tie keys together.
  MOKD_CHECK(c.optim.epochs > 0 || c.optim.steps > 0,
             "config: key 'optim.epochs' must be >= 1 when optim.steps = 0 (nothing to train)");
  if (c.distill.method == "mokd") {
    MOKD_CHECK(
        c.distill.weighting != "exact2" || c.distill.num_objectives == 2,
        "config: key 'distill.weighting' = \"exact2\" needs distill.num_objectives = 2, got ",
        c.distill.num_objectives);
    MOKD_CHECK(c.distill.weighting != "fixed" || c.distill.fixed_weights.empty() ||
                   c.distill.fixed_weights.size() == static_cast<size_t>(c.distill.num_objectives),
               "config: key 'distill.fixed_weights' must hold distill.num_objectives (",
               c.distill.num_objectives, ") weights, got ", c.distill.fixed_weights.size());
  }
}

ConfigParser::ConfigParser() = default;

void ConfigParser::add_options(CLI::App& app) {
  app.add_option("--config", config_file_,
                 "TOML file of keys ([section] key = value); command-line keys win")
      ->type_name("FILE");
  for (const auto& k : keys()) {
    std::string desc = k.doc;
    if (!k.check.rule.empty()) desc += " (" + k.check.rule + ")";
    desc += " (default: " + default_text(k) + ")";
    std::string name = k.name;
    auto* opt = app.add_option(
        "--" + k.name,
        [this, name](const CLI::results_t& r) {
          cli_values_[name] = r.empty() ? std::string() : r.back();
          return true;
        },
        desc);
    opt->type_name(cli_type_name(k.type))->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    if (k.type == KeyType::Bool) opt->expected(0, 1);  // --run.resume alone means true
    opt->group("[" + k.section + "] keys");
  }
}

TrainConfig ConfigParser::resolve() const {
  std::string text;
  if (!config_file_.empty()) {
    std::error_code ec;
    const auto st = std::filesystem::status(config_file_, ec);
    MOKD_CHECK(!std::filesystem::is_directory(st), "config ", config_file_,
               ": is a folder; --config takes a TOML file");
    std::ifstream f(config_file_, std::ios::binary);
    MOKD_CHECK(f, "config ", config_file_, ": cannot open the file");
    std::ostringstream ss;
    ss << f.rdbuf();
    text = ss.str();
  }
  return resolve(text, config_file_.empty() ? "<none>" : config_file_, cli_values_);
}

TrainConfig ConfigParser::resolve(const std::string& toml_text, const std::string& toml_name,
                                  const std::map<std::string, std::string>& overrides) {
  TrainConfig c;
  apply_toml(c, toml_text, toml_name);
  apply_overrides(c, overrides);
  validate_config(c);
  return c;
}

std::string to_toml(const TrainConfig& c) {
  std::string out;
  std::string section;
  for (const auto& k : keys()) {
    if (k.section != section) {
      out += (section.empty() ? "[" : "\n[") + k.section + "]\n";
      section = k.section;
    }
    out += k.field + " = " + format_value(k.get(c)) + "\n";
  }
  return out;
}

// Keys added after checkpoints with config hashes existed, all resume-safe: left out of the
// hashed text, so that those checkpoints keep resuming (run.overwrite only for the oldest hash).
bool added_after_hashes(const Key& k) {
  return k.section == "dist" || k.name == "optim.accum_steps" || k.name == "data.pin_memory" ||
         k.name == "model.teacher_fold_bn";
}

// to_toml's text without the keys `skip` names (and without a section left empty).
std::string toml_without(const TrainConfig& c, const std::function<bool(const Key&)>& skip) {
  std::string out, section;
  for (const auto& k : keys()) {
    if (skip(k)) continue;
    if (k.section != section) {
      out += (section.empty() ? "[" : "\n[") + k.section + "]\n";
      section = k.section;
    }
    out += k.field + " = " + format_value(k.get(c)) + "\n";
  }
  return out;
}

std::string config_hash(const TrainConfig& c) {
  static const TrainConfig defaults{};
  TrainConfig h = c;
  for (const auto& k : keys())
    if (resume_safe(k)) k.set(h, k.get(defaults));
  return sha256_hex(toml_without(h, added_after_hashes));
}

std::string config_hash_with_out_dir(const TrainConfig& c) {
  static const TrainConfig defaults{};
  TrainConfig h = c;
  for (const auto& k : keys())
    if (resume_safe(k) && k.name != "run.out_dir") k.set(h, k.get(defaults));
  return sha256_hex(toml_without(
      h, [](const Key& k) { return added_after_hashes(k) || k.name == "run.overwrite"; }));
}

std::vector<std::string> config_differences(const TrainConfig& before, const TrainConfig& now) {
  std::vector<std::string> out;
  for (const auto& k : keys()) {
    if (resume_safe(k)) continue;
    std::string a = format_value(k.get(before)), b = format_value(k.get(now));
    if (a != b) out.push_back(k.name + " = " + a + " in the run, " + b + " now");
  }
  return out;
}

std::string resume_safe_keys() {
  std::string out;
  for (const auto& k : keys())
    if (resume_safe(k)) out += (out.empty() ? "" : ", ") + k.name;
  return out;
}

std::string config_reference() {
  auto cell = [](std::string s) {
    std::string out;
    for (char ch : s) out += ch == '|' ? std::string("\\|") : std::string(1, ch);
    return out;
  };
  std::string out = "| Key | Type | Default | Meaning |\n|---|---|---|---|\n";
  for (const auto& k : keys()) {
    std::string meaning = k.doc;
    if (!k.check.rule.empty()) meaning += " (" + k.check.rule + ")";
    if (resume_safe(k)) meaning += "; may change on --resume";
    out += "| `" + k.name + "` | " + type_name(k.type) + " | `" + cell(default_text(k)) + "` | " +
           cell(meaning) + " |\n";
  }
  return out;
}

std::string did_you_mean(const std::string& given, const std::vector<std::string>& candidates) {
  return suggest(given, candidates);
}

}  // namespace mokd
