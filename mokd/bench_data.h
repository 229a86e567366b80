// mokd_train bench-data: how fast the input pipeline turns the configured training split into
// images, per stage and per thread count, so that data.workers can be sized against the model's
// step rate. Four per-sample stages, each timed on a fixed subset of the split read into memory
// first (file reading and the disk are not measured), on 1, 2, 4, ... std::threads:
//   decode      the file to RGB (io/decode.h); not for splits held decoded (Fashion-MNIST, CIFAR)
//   decode+rrc  decode + RandomResizedCrop's box (data.scale_*, data.ratio_*) resized to the
//               output size with data.interpolation (io/random_resized_crop.h, io/resample.h),
//               whether or not data.random_resized_crop is on
//   train       the configured train transform (io/transform.h) + normalisation + random erasing:
//               what a loader worker does per sample (mixup is per batch: in the loader's number)
//   eval        the eval transform (resize to floor(size / crop_pct), centre crop) + normalisation
// Thread t of T takes the subset's samples t, t + T, t + 2T, ... (cycling), each with the random
// stream the loader gives that position (data_key(run.seed, 0, Sample, position)), until the time
// is up. Then the real Loader (data.workers, data.batch_size, mixup included, files read through
// the page cache) over the whole split: the end-to-end number.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/dataset.h"
#include "mokd/config.h"

namespace mokd {

struct BenchDataOptions {
  std::vector<int> threads;  // thread counts to time; empty: default_thread_counts()
  double seconds = 1.0;      // per stage and thread count, and for the loader (> 0)
  int64_t samples = 512;     // the subset read into memory: this many samples spread evenly
};

// 1, 2, 4, ... up to `cores`, and `cores` itself when it is not a power of two.
std::vector<int> default_thread_counts(int cores);
// "1,2,4" -> {1, 2, 4}; throws naming `what` (the option) for anything but positive integers.
std::vector<int> parse_thread_counts(const std::string& text, const std::string& what);

struct BenchDataRow {
  std::string stage;  // "decode", "decode+rrc", "train", "eval"
  int threads = 0;
  int64_t images = 0;
  double seconds = 0;
  double images_per_s = 0;
  double per_thread = 0;  // images_per_s / threads
  // per_thread / the per-thread rate at the smallest thread count timed (1 when 1 is timed).
  double scaling = 0;
};

struct BenchDataResult {
  std::string split;  // the split's location
  int64_t split_size = 0, samples = 0;
  int64_t out_height = 0, out_width = 0, channels = 0;
  int cores = 0;
  bool encoded = true;                   // the split holds image files (else: no decode stage)
  std::vector<std::string> stage_notes;  // what each stage runs, one line each
  std::vector<BenchDataRow> rows;
  // The Loader, end to end.
  int workers = 0;
  int64_t batch_size = 0, batches = 0;
  double loader_seconds = 0, batches_per_s = 0, loader_images_per_s = 0;
};

// Times the stages on `train` (the configured training split, cfg's data.* keys) and the Loader.
// Throws naming the option for a bad option, and as the loader does for unusable data.
BenchDataResult bench_data(const TrainConfig& cfg, const data::Dataset& train,
                           const BenchDataOptions& opt);

// The report bench-data prints: a header naming the split and the subset, the stage notes, one
// table row per stage and thread count (stage, threads, images/s, images/s per thread, scaling),
// and the loader line.
std::string format_bench_data(const BenchDataResult& r);
// The same as JSON (--json).
nlohmann::json bench_data_json(const BenchDataResult& r);

}  // namespace mokd
