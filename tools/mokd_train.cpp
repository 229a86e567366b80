// mokd_train: the command-line front end. Subcommands:
//   teacher    train a model with cross-entropy (model.teacher)
//   distill    train model.student from a frozen model.teacher with distill.method
//   eval       top-1/top-5 of a weights file on the test split
//   export     check a weights file against its model and write it for timm
//   benchmark  images/s and peak memory of distillation steps on synthetic data
//   bench-data    images/s of the input pipeline per stage and thread count (mokd/bench_data.h)
//   preview-data  a PNG of training samples after the train and eval transforms
//                 (mokd/preview_data.h)
//   models     list the model names
//   keys       print every configuration key as a Markdown table
// Configuration: --config FILE (TOML) and --section.key=value overrides; see --help.
#include <omp.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#ifdef MOKD_WITH_CUDA
#include "engine/cuda/cuda_backend.h"  // cuda_allocator(): cudaMalloc calls in `benchmark`
#include "engine/cuda/op_profile.h"    // MOKD_CUDA_PROFILE=1 in `benchmark`
#endif
#include "engine/host_sync.h"
#include "engine/kernel_costs.h"
#include "engine/precision.h"
#include "io/safetensors.h"
#include "models/registry.h"
#include "mokd/bench_data.h"
#include "mokd/checkpoint.h"
#include "mokd/config.h"
#include "mokd/cost_report.h"
#include "mokd/distill.h"
#include "mokd/dry_run.h"
#include "mokd/evaluate.h"
#include "mokd/job.h"
#include "mokd/preview_data.h"
#include "mokd/setup.h"
#include "mokd/trainer.h"

using namespace mokd;

namespace {

// Strict load of a weights file, naming the file and the model on a mismatch.
void load_weights(Model& model, const io::TensorMap& w, const std::string& path,
                  const std::string& name) {
  try {
    model.load_state_dict(w);
  } catch (const Error& e) {
    MOKD_FAIL(path, " does not fit model ", name, " (pick the model with --model): ", e.what());
  }
}

int cmd_eval(const TrainConfig& cfg, const std::string& weights, const std::string& model_name,
             dist::Communicator* comm) {
  Device dev = resolve_device(cfg.run.device);
  auto test = open_dataset(cfg, false);
  io::Metadata meta;
  io::TensorMap w = io::load_safetensors(weights, {}, &meta);
  std::string name = !model_name.empty()
                         ? model_name
                         : (meta.count("model") ? meta.at("model") : cfg.model.student);
  auto model = make_model(name, cfg, *test, 0, false);
  load_weights(*model, w, weights, name);
  model->to(dev);
  EvalResult r = evaluate(*model, *test, cfg, dev, comm);
  if (comm->rank() == 0)
    std::printf("%s (%s) on %s test (%ld images): top-1 %.2f%%  top-5 %.2f%%  loss %.4f\n",
                weights.c_str(), name.c_str(), cfg.data.dataset.c_str(), (long)r.count, r.top1,
                r.top5, r.loss);
  return 0;
}

int cmd_export(const TrainConfig& cfg, const std::string& weights, const std::string& out,
               const std::string& model_name) {
  io::Metadata meta;
  io::TensorMap w = io::load_safetensors(weights, {}, &meta);
  std::string name = !model_name.empty()
                         ? model_name
                         : (meta.count("model") ? meta.at("model") : cfg.model.student);
  auto ds = open_dataset(cfg, false);
  auto model = make_model(name, cfg, *ds, 0, false);
  load_weights(*model, w, weights, name);  // strict: names and shapes must be the model's
  check_output_file(out);
  check_output_file(out + ".tmp." + std::to_string(::getpid()));
  io::save_safetensors(out, model->state_dict(), {{"model", name}, {"format", "pt"}});
  std::printf(
      "exported %s (%s, %ld parameters) to %s\n"
      "load it in PyTorch with timm.create_model(...) + "
      "load_state_dict(safetensors.torch.load_file(\"%s\"))\n",
      weights.c_str(), name.c_str(), (long)model->num_parameters(), out.c_str(), out.c_str());
  return 0;
}

// Dense bf16 tensor-core peak of the GPU, in TFLOP/s, for MFU: MOKD_PEAK_TFLOPS, else NVIDIA's
// datasheet figure for the cards we know by name (first match; 0 when unknown).
double bf16_peak_tflops(Device dev) {
  if (const char* e = std::getenv("MOKD_PEAK_TFLOPS")) {
    char* end = nullptr;
    const double v = std::strtod(e, &end);
    MOKD_CHECK(end != e && *end == '\0' && std::isfinite(v) && v > 0,
               "MOKD_PEAK_TFLOPS: expected a positive number of TFLOP/s, got '", e, "'");
    return v;
  }
  if (!dev.is_cuda()) return 0;
#ifdef MOKD_WITH_CUDA
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, dev.index) != cudaSuccess) return 0;
  const std::string name = prop.name;
  struct Card {
    const char* name;
    double tflops;
  };
  for (const Card& c :
       {Card{"H200", 989.4}, Card{"H100 PCIe", 756.0}, Card{"H100", 989.4}, Card{"A100", 312.0}})
    if (name.find(c.name) != std::string::npos) return c.tflops;
#else
  (void)dev;
#endif
  return 0;
}

// `benchmark --ledger`: the cost ledger of the timed steps and the card it is floored on. The
// defaults are the H200's, measured by bench/bench_gpu.cpp (NOTES.md): d2d copy 3586 GB/s, direct
// cuBLASLt GEMM 688 TFLOP/s in bf16 and 51.3 in f32 (TF32 off).
struct LedgerOptions {
  bool on = false;
  double copy_gbps = 3586;
  double gemm_tflops = 0;  // 0: 688 for run.precision bf16, 51.3 for f32
};

int cmd_benchmark(const TrainConfig& cfg, const LedgerOptions& lo) {
  Device dev = resolve_device(cfg.run.device);
  const double peak = bf16_peak_tflops(dev);  // a bad MOKD_PEAK_TFLOPS fails before the timing
  apply_runtime_settings(cfg);                // run.threads, run.precision
  ModelOverrides o;
  auto student = create_model(cfg.model.student, o);
  auto teacher = create_model(cfg.model.teacher, o);
  MOKD_CHECK(
      student->img_size() == teacher->img_size() && student->in_chans() == teacher->in_chans(),
      "benchmark: model.student (", student->img_size(), "px, ", student->in_chans(),
      " channels) and model.teacher (", teacher->img_size(), "px, ", teacher->in_chans(),
      " channels) take different inputs");
  student->to(dev);
  teacher->to(dev);
  // As distill loads its teacher (model.teacher_fold_bn).
  teacher->eval();
  const int64_t folded = cfg.model.teacher_fold_bn ? teacher->fold_batch_norm() : 0;
  DistillConfig dc = make_distill_config(cfg);
  if (dc.method == Method::DeitHard && !student->has_dist_head()) dc.method = Method::KD;
  Distiller d(*student, *teacher, dc);
  nn::NamedTensors named = student->named_parameters();
  for (auto& p : d.projector_parameters()) named.push_back(p);
  AdamW opt(decay_groups(named, 1e-4f, 0.05f));
  int64_t B = cfg.bench.batch_size, S = student->img_size(), C = student->in_chans();
  Tensor x = Tensor::empty({B, S, S, C}, DType::F32, dev);
  Generator g(1, Stream::Data);
  normal_(x, 0.f, 1.f, g);
  std::vector<int64_t> labels(B);
  for (int64_t i = 0; i < B; ++i) labels[i] = i % student->num_classes();
  Tensor y = Tensor::from_vector_i64(labels, {B}, dev);
  Allocator& alloc = allocator_for(dev);
  for (int64_t i = 0; i < cfg.bench.warmup; ++i) d.step(opt, x, y);
  alloc.reset_peak();
#ifdef MOKD_WITH_CUDA
  cuda_profile::reset();  // MOKD_CUDA_PROFILE=1: per-op GPU time of the timed steps only
  const size_t mallocs0 = cuda_allocator() ? cuda_allocator()->cuda_malloc_calls() : 0;
#endif
  // The timed steps read nothing back, as the trainer's between two log steps; the clock stops
  // once the last step's values are read (the device has finished every step by then).
  MicroBatch m;
  m.images = x;
  m.labels = y;
  const uint64_t syncs0 = host_syncs();
  const double flops0 = model_flops();
  std::optional<KernelLedger> ledger;
  if (lo.on) ledger.emplace();
#ifdef MOKD_WITH_CUDA
  const uint64_t launches0 = cuda_launch_counter().load();
#endif
  auto t0 = std::chrono::steady_clock::now();
  StepStats last;
  for (int64_t i = 0; i < cfg.bench.steps; ++i) last = d.step(opt, {m}, nullptr);
  const uint64_t step_syncs = host_syncs() - syncs0;
  const double steps = static_cast<double>(std::max<int64_t>(cfg.bench.steps, 1));
  const double flops_per_step = (model_flops() - flops0) / steps;
#ifdef MOKD_WITH_CUDA
  const double launches_per_step = (cuda_launch_counter().load() - launches0) / steps;
#endif
  last.read();
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double ms = 1000 * s / std::max<int64_t>(cfg.bench.steps, 1);
  std::printf("benchmark %s <- %s, method %s, batch %ld, %ldpx, on %s, %s matmuls\n",
              cfg.model.student.c_str(), cfg.model.teacher.c_str(), method_name(dc.method), (long)B,
              (long)S, dev.str().c_str(), cfg.run.precision.c_str());
  std::printf("  %.1f ms/step  %.1f images/s  peak memory %.1f MiB (tensors on %s)\n", ms,
              B * 1000.0 / ms, alloc.peak_bytes() / 1048576.0, dev.str().c_str());
  std::string epilogues = "fused (one pass)";
#ifdef MOKD_WITH_CUDA
  if (dev.is_cuda() && !cuda_fused_epilogues())
    epilogues = "unfused (bias, residual and ReLU passes; MOKD_FUSED_EPILOGUES=1 fuses them)";
#endif
  if (folded > 0)
    std::printf("  teacher: %ld batch norms folded into its convolutions, epilogues %s\n",
                (long)folded, epilogues.c_str());
  else
    std::printf("  teacher: no batch norm folded (%s)\n",
                cfg.model.teacher_fold_bn ? "it has none" : "model.teacher_fold_bn = false");
  std::printf("  host synchronisations inside the timed steps: %.1f per step\n",
              static_cast<double>(step_syncs) / std::max<int64_t>(cfg.bench.steps, 1));
  const double tflops = flops_per_step / (ms / 1000) / 1e12;
  if (peak > 0)
    std::printf(
        "  model FLOPs %.3g per step, %.1f TFLOP/s, MFU %.1f%% of %.0f TFLOP/s (bf16 peak)\n",
        flops_per_step, tflops, 100 * tflops / peak, peak);
  else
    std::printf(
        "  model FLOPs %.3g per step, %.3f TFLOP/s%s\n", flops_per_step, tflops,
        dev.is_cuda() ? " (MFU: unknown bf16 peak for this GPU; set MOKD_PEAK_TFLOPS)" : "");
#ifdef MOKD_WITH_CUDA
  if (dev.is_cuda())
    std::printf("  kernel launches per step: %.0f (own kernels, cuBLASLt, cuDNN, device copies)\n",
                launches_per_step);
#endif
  if (ledger) {
    CardRates card;
    card.copy_gbps = lo.copy_gbps;
    card.gemm_tflops =
        lo.gemm_tflops > 0 ? lo.gemm_tflops : (cfg.run.precision == "bf16" ? 688.0 : 51.3);
    std::map<std::string, double> gpu;
#ifdef MOKD_WITH_CUDA
    if (dev.is_cuda()) gpu = cuda_profile::times_ms();
#endif
    std::printf(
        "%s",
        format_ledger(ledger->by_kernel(), steps, card, gpu.empty() ? nullptr : &gpu).c_str());
  }
  if (const std::string problem = last.problem(); !problem.empty())
    std::printf("  warning: the last step's values show a problem: %s\n", problem.c_str());
#ifdef MOKD_WITH_CUDA
  if (dev.is_cuda()) {
    std::printf(
        "  cudaMalloc calls in the timed steps: %zu (the caching allocator's steady state: 0)\n",
        cuda_allocator()->cuda_malloc_calls() - mallocs0);
    cuda_profile::report(stdout);
  }
#endif
  return 0;
}

int cmd_bench_data(const TrainConfig& cfg, const std::string& threads, const BenchDataOptions& o,
                   const std::string& json) {
  BenchDataOptions opt = o;
  if (!threads.empty()) opt.threads = parse_thread_counts(threads, "--threads");
  if (!json.empty()) check_output_file(json);  // before the minutes of timing
  auto train = open_dataset(cfg, true);
  BenchDataResult r = bench_data(cfg, *train, opt);
  std::printf("%s", format_bench_data(r).c_str());
  if (!json.empty()) {
    write_file_atomically(json, bench_data_json(r).dump(2) + "\n");
    std::printf("wrote %s\n", json.c_str());
  }
  return 0;
}

int cmd_preview_data(const TrainConfig& cfg, const PreviewOptions& opt) {
  auto train = open_dataset(cfg, true);
  PreviewResult r = preview_data(cfg, *train, opt);
  std::printf(
      "wrote %s: %ld training samples of %s (%ldx%ld), train transform | eval transform, "
      "%ld x %ld pixels\n",
      r.png.c_str(), (long)r.indices.size(), train->location().c_str(), (long)r.image_height,
      (long)r.image_width, (long)r.width, (long)r.height);
  if (!r.raw.empty())
    std::printf(
        "wrote %s: train_u8, train (f32, normalised and erased), eval_u8, labels, "
        "indices\n",
        r.raw.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "mokd_train: knowledge distillation with MoKD (FAMO-weighted objectives, orthogonal "
      "projector)"};
  app.require_subcommand(1);
  struct Sub {
    CLI::App* app;
    ConfigParser parser;
  };
  std::vector<std::unique_ptr<Sub>> subs;
  std::string device;  // --device: shorthand for --run.device
  auto add = [&](const char* name, const char* doc) {
    auto s = std::make_unique<Sub>();
    s->app = app.add_subcommand(name, doc);
    s->app->add_option(
        "--device", device,
        "cpu, cuda or cuda:N (shorthand for --run.device; default: cuda when a GPU is present)");
    s->parser.add_options(*s->app);
    subs.push_back(std::move(s));
    return subs.back().get();
  };
  Sub* teacher = add("teacher", "train model.teacher with cross-entropy");
  Sub* distill =
      add("distill", "distil model.student from the frozen model.teacher (distill.method)");
  const char* exit_status =
      "Exit status: 0 when the run finished or run.stop_after stopped it; 1 on an error; 130 "
      "(SIGINT) or 143 (SIGTERM) when a signal stopped it, after a checkpoint (continue with "
      "--run.resume=true).";
  app.footer(exit_status);
  teacher->app->footer(exit_status);
  distill->app->footer(exit_status);
  Sub* eval = add("eval", "top-1/top-5 of a weights file on the test split");
  Sub* exp = add("export", "check a weights file against its model and write it for timm");
  Sub* bench = add("benchmark", "images/s and peak memory of distillation steps on synthetic data");
  Sub* bdata = add("bench-data",
                   "images/s of the input pipeline on the training split: decode, decode + "
                   "RandomResizedCrop, the train transform, the eval transform, per thread count; "
                   "then the loader end to end");
  Sub* preview = add("preview-data",
                     "a PNG of training samples after the train transform, each next to its eval "
                     "transform (and the tensors with --raw)");
  bool dry_run = false;
  for (Sub* s : {teacher, distill})
    s->app->add_flag("--dry-run", dry_run,
                     "print the resolved run (splits, models, steps, learning rate, memory with "
                     "an estimate of a step's peak) and stop, writing nothing");
  CLI::App* models = app.add_subcommand("models", "list the model names");
  CLI::App* keys = app.add_subcommand("keys", "print every configuration key (Markdown table)");
  std::string weights, out, model_name;
  for (Sub* s : {eval, exp}) {
    s->app->add_option("--weights", weights, "safetensors weights (timm names)")->required();
    s->app->add_option("--model", model_name,
                       "model name (default: the file's metadata, else model.student)");
  }
  exp->app->add_option("--out", out, "output safetensors")->required();
  std::string threads, json;
  BenchDataOptions bopt;
  bdata->app->add_option("--threads", threads,
                         "thread counts to time, comma-separated (default: 1, 2, 4, ... up to the "
                         "core count)");
  bdata->app
      ->add_option("--seconds", bopt.seconds,
                   "seconds per stage and thread count, and for the loader")
      ->capture_default_str();
  bdata->app
      ->add_option("--samples", bopt.samples,
                   "samples of the split read into memory for the stages (spread evenly)")
      ->capture_default_str();
  bdata->app->add_option("--json", json, "also write the results to this JSON file");
  const CLI::Validator positive(
      [](std::string& v) {
        char* end = nullptr;
        const double x = std::strtod(v.c_str(), &end);
        return end != v.c_str() && *end == '\0' && std::isfinite(x) && x > 0
                   ? std::string()
                   : "expected a positive number, got '" + v + "'";
      },
      "POSITIVE");
  LedgerOptions ledger_opt;
  bench->app->add_flag("--ledger", ledger_opt.on,
                       "also print the cost ledger: per kernel, calls, bytes and FLOPs per step "
                       "(from shapes) and the floor they imply on a card");
  bench->app
      ->add_option("--copy-gbps", ledger_opt.copy_gbps,
                   "the ledger's card: copy bandwidth in GB/s (default: the H200's, measured)")
      ->check(positive)
      ->capture_default_str();
  bench->app
      ->add_option("--gemm-tflops", ledger_opt.gemm_tflops,
                   "the ledger's card: GEMM rate in TFLOP/s (default: the H200's, measured: 688 "
                   "in bf16, 51.3 in f32)")
      ->check(positive);
  PreviewOptions popt;
  preview->app->add_option("--out", popt.out, "the PNG to write")->required();
  preview->app->add_option("--count", popt.count, "training samples shown")->capture_default_str();
  preview->app->add_option("--raw", popt.raw_dir,
                           "also write DIR/preview.safetensors: the images as tensors (uint8 "
                           "train and eval, f32 normalised), labels, indices");
  // A mistyped subcommand gets its name and the closest one, not CLI11's "A subcommand is
  // required".
  if (argc > 1 && argv[1][0] != '-') {
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
    if (std::find(names.begin(), names.end(), argv[1]) == names.end()) {
      std::string all;
      for (const auto& n : names) all += (all.empty() ? "" : ", ") + n;
      std::fprintf(stderr,
                   "mokd_train: error: unknown subcommand '%s'%s; the subcommands are: %s\n",
                   argv[1], did_you_mean(argv[1], names).c_str(), all.c_str());
      return 1;
    }
  }
  CLI11_PARSE(app, argc, argv);
  Job job;  // the data-parallel job of teacher, distill and eval (one process by default)
  try {
    if (keys->parsed()) {
      std::printf("%s", config_reference().c_str());
      return 0;
    }
    if (models->parsed()) {
      for (auto& [name, desc] : list_models())
        std::printf("%-34s %s\n", name.c_str(), desc.c_str());
      return 0;
    }
    for (auto& s : subs) {
      if (!s->app->parsed()) continue;
      TrainConfig cfg = s->parser.resolve();
      if (!device.empty()) {
        parse_device(device);  // throws naming the value
        cfg.run.device = device;
      }
      if ((s.get() == teacher || s.get() == distill) && dry_run) {
        std::printf("%s",
                    describe_run(cfg, s.get() == teacher ? TrainMode::Teacher : TrainMode::Distill)
                        .c_str());
        return 0;
      }
      if (s.get() == teacher || s.get() == distill || s.get() == eval)
        job = join_job(cfg, dist::process_environment());
      if (s.get() == teacher || s.get() == distill) {
        install_stop_handlers();
        TrainSummary r = train(cfg, s.get() == teacher ? TrainMode::Teacher : TrainMode::Distill,
                               job.comm.get());
        if (r.stopped) return exit_code(r);
        if (job.lead())
          std::printf("done: %ld steps in %.1f s; final top-1 %.2f%%, best top-1 %.2f%% (%s)\n",
                      (long)r.steps, r.seconds, r.final_eval.top1, r.best_eval.top1,
                      r.best_weights.c_str());
        return 0;
      }
      if (s.get() == eval) return cmd_eval(cfg, weights, model_name, job.comm.get());
      if (s.get() == exp) return cmd_export(cfg, weights, out, model_name);
      if (s.get() == bench) return cmd_benchmark(cfg, ledger_opt);
      if (s.get() == bdata) return cmd_bench_data(cfg, threads, bopt, json);
      if (s.get() == preview) return cmd_preview_data(cfg, popt);
    }
  } catch (const std::exception& e) {
    if (job.comm && job.comm->world() > 1) {
      // The other ranks would wait for this one: end the whole job, saying which rank failed.
      std::fprintf(stderr, "\nmokd_train: error on %s: %s\n", dist::describe(job.launch).c_str(),
                   e.what());
      std::fflush(stderr);
      job.comm->abort(1);
    }
    std::fprintf(stderr, "\nmokd_train: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
