// mokd_train's configuration: every key, its type, default and meaning in one table
// (mokd/config.cpp), read from a TOML file and overridden by --section.key=value on the command
// line. `mokd_train <subcommand> --help` prints the table. Unknown keys, wrong types and
// out-of-range values are errors naming the key.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace mokd {

struct RunConfig {
  // checkpoints, metrics, the resolved config; "" = runs/<subcommand>-<trained model>
  // (default_out_dir in mokd/setup.h)
  std::string out_dir = "";
  uint64_t seed = 0;
  std::string device = "auto";    // auto (cuda when available), cpu, cuda, cuda:N
  std::string precision = "f32";  // matmul/linear precision: f32 or bf16 (engine/precision.h)
  int threads = 0;                // OpenMP threads on the CPU; 0 = all cores
  bool resume = false;            // continue from out_dir/checkpoints/state.safetensors
  int64_t stop_after = 0;         // > 0: checkpoint and stop this invocation after N steps
  bool overwrite = false;         // a fresh run may replace the run already in out_dir
};

struct DataConfig {
  std::string dataset = "fashion_mnist";  // fashion_mnist, cifar10, cifar100, image_folder,
                                          // tar_shards
  std::string dir = "";                   // "" = the dataset's default location
  std::string train_shards = "";          // tar_shards: folder or brace pattern; "" = dir/train
  std::string val_shards = "";            // tar_shards: folder or brace pattern; "" = dir/val
  int64_t image_size = 0;  // the model's input side (image files: required); 0 = native
  // The global batch: the images of one optimizer step, whatever the number of processes and
  // optim.accum_steps (each micro-batch holds batch_size / (world x accum_steps)).
  int64_t batch_size = 128;
  int64_t eval_batch_size = 512;
  int workers = 2;
  int prefetch = 4;
  bool pin_memory = false;    // training batches written into pinned host memory (GPU runs)
  int64_t train_limit = 0;    // use only the first N training images (0 = all)
  int64_t eval_limit = 0;     // evaluate on the first N test images (0 = all)
  int64_t crop_padding = -1;  // random crop with this zero padding (-1 = dataset default)
  bool hflip = false;
  bool random_resized_crop = false;
  double scale_min = 0.08, scale_max = 1.0;  // RandomResizedCrop's area fraction (timm --scale)
  double ratio_min = 0.75, ratio_max = 4.0 / 3.0;  // and aspect ratio (timm --ratio)
  std::string interpolation = "bicubic";           // every resize (timm --interpolation)
  std::string auto_augment = "";                   // timm RandAugment string; "" = off (--aa)
  double color_jitter = 0.0;                       // when auto_augment is off (--color-jitter)
  double reprob = 0.0;                             // random erasing probability (--reprob)
  std::string remode = "pixel";                    // (--remode)
  int64_t recount = 1;                             // (--recount)
  int64_t aug_repeats = 0;                         // repeated augmentation (--aug-repeats)
  double crop_pct = 0.875;                         // evaluation centre crop (--crop-pct)
  std::string bad_samples = "fatal";               // an undecodable file: fatal or skip
  double mixup_alpha = 0.0;
  double cutmix_alpha = 0.0;
  double mixup_prob = 1.0;
  double mixup_switch_prob = 0.5;
  std::vector<double> mean;  // normalisation; empty = the dataset's statistics
  std::vector<double> std;
};

struct ModelConfig {
  std::string student = "vit_fmnist_tiny_distilled";
  std::string teacher = "resnet_fmnist_small";
  std::string teacher_weights =
      "";                         // safetensors (timm names); distill needs it, teacher ignores it
  std::string student_init = "";  // optional safetensors to start the student from
  std::string teacher_init = "";  // optional safetensors to start a teacher run from (fine-tuning)
  bool reset_head = false;        // teacher_init / student_init: keep a fresh classifier head
  bool teacher_fold_bn = true;    // distill: the frozen teacher's batch norms folded into its convs
  double drop_path_rate = 0.0;
  double drop_rate = 0.0;
};

struct OptimConfig {
  std::string optimizer = "adamw";  // adamw, sgd
  int64_t epochs = 10;
  int64_t steps = 0;  // > 0: stop after this many steps (overrides epochs)
  double lr = 1e-3;
  double min_lr = 1e-5;
  int64_t warmup_steps = 0;
  double warmup_lr = 1e-6;
  double weight_decay = 0.05;
  double momentum = 0.9;   // sgd
  bool nesterov = false;   // sgd
  double grad_clip = 1.0;  // global norm; 0 = off
  // Micro-batches per process and step: gradients are summed over them (and the processes) before
  // one update, so the same global batch needs less memory.
  int64_t accum_steps = 1;
  double label_smoothing = 0.1;
  double ema_decay = 0.0;  // > 0: keep an EMA of the student and evaluate it too
};

struct DistillKeys {
  std::string method = "mokd";        // none, kd, deit-hard, vkd, mokd
  int num_objectives = 3;             // mokd: 3 = task, kl, feat; 2 = task, kl + feat
  std::string weighting = "famo";     // famo, fixed, exact2 (K = 2)
  std::vector<double> fixed_weights;  // weighting = fixed (default: ones)
  double temperature = 1.0;
  double kd_alpha = 0.5;
  std::string projector = "stiefel";  // stiefel, bilinear
  int64_t bilinear_rank = 0;
  std::string student_feature = "auto";  // auto, mean_patch, cls, dist, pooled
  std::string teacher_feature = "auto";
  double famo_lr = 0.025;
  double famo_weight_decay = 0.01;
  int64_t diagnostics_every = 0;
};

struct LogConfig {
  int64_t log_every = 50;        // steps between progress lines (metrics: every step)
  int64_t eval_every = 1;        // epochs between evaluations (0 = only at the end)
  int64_t checkpoint_every = 0;  // steps between checkpoints (0 = at each evaluation)
};

// Data-parallel runs (docs/distributed.md): who this process is comes from the launcher's
// variables (torchrun, mpirun, srun, MPICH); these keys override them.
struct DistConfig {
  std::string backend = "auto";  // auto, local, mpi, nccl
  int rank = -1;                 // -1 = from the launcher
  int world_size = -1;
  int local_rank = -1;
  std::string master_addr = "";  // NCCL without MPI: rank 0's address ("" = MASTER_ADDR)
  int master_port = -1;          // and port (-1 = MASTER_PORT)
  double timeout_s = 300;        // a collective waiting longer ends the run with an error
  double bucket_mb = 25;         // gradient all-reduce buckets (the first one 1 MB)
};

struct BenchConfig {
  int64_t steps = 10;  // timed steps
  int64_t warmup = 3;
  int64_t batch_size = 64;
};

struct TrainConfig {
  RunConfig run;
  DataConfig data;
  ModelConfig model;
  OptimConfig optim;
  DistillKeys distill;
  LogConfig log;
  DistConfig dist;
  BenchConfig bench;
};

// The configuration machinery (mokd/config.cpp).
class ConfigParser {
 public:
  ConfigParser();
  // Registers --config FILE and one --section.key option per key (doc and default in --help).
  // The options write into this parser: it must outlive app.parse() and must not move after this.
  // Booleans take true/false/1/0/yes/no/on/off, or nothing (--run.resume = true); lists take
  // comma-separated numbers (--data.mean=0.5,0.5,0.5; --data.mean=[] for the empty list).
  void add_options(CLI::App& app);
  // Defaults < the TOML file given by --config < the command-line keys. Validates every value;
  // throws mokd::Error naming the key (and the file) on an unknown key, a wrong type or a value
  // out of range.
  TrainConfig resolve() const;
  // Same, from explicit inputs (tests): a TOML document and key=value overrides.
  static TrainConfig resolve(const std::string& toml_text, const std::string& toml_name,
                             const std::map<std::string, std::string>& overrides);

 private:
  std::string config_file_;
  std::map<std::string, std::string> cli_values_;  // filled by CLI11 for keys given
};

// Checks every key's type range and validator plus the rules that tie keys together (optim.epochs
// or optim.steps > 0; mokd: exact2 needs num_objectives = 2, fixed_weights holds num_objectives
// values). resolve() calls it; callers that build a TrainConfig in code may too. Throws mokd::Error
// naming the key.
void validate_config(const TrainConfig& c);
// Every key as TOML (written next to checkpoints; loads back to the same config).
std::string to_toml(const TrainConfig& c);
// SHA-256 (hex) of the keys that must not change across --resume (everything but run.out_dir,
// run.resume, run.stop_after, run.overwrite, run.device, run.threads, data.workers,
// data.prefetch, data.pin_memory, log.*, optim.epochs, optim.steps, optim.accum_steps, dist.*: the
// number of processes and micro-batches may change, the global batch may not). run.out_dir is left
// out so that a moved run folder, or the same folder named by another path, resumes.
std::string config_hash(const TrainConfig& c);
// The hash that checkpoints written before run.out_dir left the hash hold: run.out_dir kept, and
// the TOML text without the keys added since (run.overwrite). A resume accepts either.
std::string config_hash_with_out_dir(const TrainConfig& c);
// The keys that must not change across --resume whose values differ between `before` (a run's
// stored config.toml) and `now`, one "key = <before> in the run, <now> now" line each (values in
// TOML syntax); empty when none does.
std::vector<std::string> config_differences(const TrainConfig& before, const TrainConfig& now);
// The keys that may change across --resume, comma-separated (messages).
std::string resume_safe_keys();
// Markdown table of every key: name, type, default, meaning (README's config reference).
std::string config_reference();

// " (did you mean 'x'?)" naming the closest of `candidates` to `given`, or "" when none is close
// (config keys, subcommands).
std::string did_you_mean(const std::string& given, const std::vector<std::string>& candidates);

}  // namespace mokd
