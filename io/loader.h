// A deterministic prefetching batch loader: epoch permutations and per-sample augmentation keyed by
// (seed, epoch, position), so batches are bit-identical whatever the number of worker threads and
// an epoch can be resumed at any batch. The worker threads share out the samples of each batch
// (decode and per-sample transform, io/transform.h, into uint8) and draw each sample's random
// erasing; the worker that finishes a batch's last samples draws its mixup/cutmix. A batch leaves
// the loader as uint8 pixels with those draws as data: Batch::images(device) normalises, erases
// and mixes on the training device (engine/image_batch.h), so a GPU receives a quarter of the f32
// bytes, read by DMA from the pinned host buffer the workers wrote (LoaderOptions::pin_memory). Up
// to `prefetch` batches are built ahead of the consumer, whatever the number of workers.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/pinned_host.h"
#include "engine/tensor.h"
#include "io/augment.h"
#include "io/dataset.h"
#include "io/random_erasing.h"
#include "io/repeated_sampler.h"
#include "io/state.h"
#include "io/transform.h"

namespace mokd::data {

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int num_workers = 2;          // threads building batches; 0 builds them in next()'s thread
  int prefetch = 4;             // batches built ahead of the consumer (>= 1), whatever num_workers
  TransformOptions transform;   // per sample: decode, geometry, flip, RandAugment / jitter
  Normalize normalize;          // (x / 255 - mean) / std per channel
  bool random_erasing = false;  // per sample, after normalisation
  RandomErasingOptions erasing;
  MixupOptions mixup;  // per batch; soft targets when mixup, cutmix or label smoothing is on
  // > 1: timm's repeated-augmentation sampler (each image `repeats` times in a row of the order,
  // the epoch as long as timm's num_selected_samples) instead of a plain permutation.
  int repeats = 0;
  RepeatedAugmentOptions repeated;
  // A sample that cannot be read or decoded: false stops with its path; true replaces it by the
  // next good sample of the order (deterministically) and warns once per file on stderr.
  bool skip_bad_samples = false;
  // Where the batches are consumed, and whether their pixels are written straight into pinned
  // host memory there (engine/pinned_host.h) when that is a GPU: the upload then reads the
  // workers' buffer by DMA, without a staging copy. Off, or on the CPU, pixels are heap memory
  // and an upload goes through the backend's staging ring.
  Device device = Device::cpu();
  bool pin_memory = false;
  // Data parallelism and gradient accumulation: the epoch is cut into steps of `group`
  // consecutive batches (micro-batches of batch_size samples; a tail too short for a whole step
  // is left out) and this loader returns batches [first, first + count) of every step. Batch
  // indices, and so mixup/cutmix, stay those of the whole epoch, as do each sample's position
  // and augmentation: the ranks of a job together see what one loader with count = group sees.
  // The default returns every batch.
  struct Shard {
    int64_t group = 1, first = 0, count = 1;
  } shard;
};

struct Batch {
  Tensor pixels;        // u8 [B, H, W, C] on the CPU: the samples after their per-sample transform
  Tensor labels;        // i64 [B] (the un-mixed labels)
  Tensor soft_targets;  // f32 [B, num_classes] when options.mixup.soft_targets(), else undefined
  Tensor table;         // f32 [C, 256] on the CPU: the normalisation of each byte value
  std::vector<EraseBox> erase;  // random erasing, grouped by sample
  MixSpec mix;                  // mixup / cutmix of the batch
  int64_t epoch = -1, index = -1;

  int64_t size() const { return pixels.defined() ? pixels.size(0) : 0; }
  // The model's input, f32 [B, H, W, C] on `device`: the pixels (and the table) copied there,
  // then normalised, erased and mixed by that device's backend (prepare_images).
  Tensor images(Device device = Device::cpu()) const;
};

class Loader {
 public:
  // The dataset must outlive the loader.
  Loader(const Dataset& dataset, LoaderOptions options);
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  // Begins `epoch` at batch start_batch (0 <= start_batch <= batches_per_epoch()), dropping any
  // prefetched batches. next() without a start_epoch() begins epoch 0.
  void start_epoch(int64_t epoch, int64_t start_batch = 0);
  // The next batch of the epoch; false once the epoch is exhausted. Rethrows a worker's exception
  // (e.g. an undecodable image) when its batch is reached.
  bool next(Batch& batch);

  // This loader's batches per epoch (count per step under a shard).
  int64_t batches_per_epoch() const;
  // The epoch's index of this loader's k-th batch (k itself without a shard).
  int64_t global_index(int64_t k) const;
  int64_t samples_per_epoch() const;
  // Samples replaced since construction (skip_bad_samples).
  int64_t bad_samples() const { return bad_samples_.load(); }
  int64_t epoch() const { return epoch_; }
  int64_t next_index() const { return consume_; }

  // The position for a checkpoint: counters "epoch", "batch_in_epoch" (the epoch's index of the
  // batch next() returns next, at the start of a step under a shard; the epoch's batch count once
  // it is exhausted) and "batch_size". Before any start_epoch(): epoch 0, batch 0. load_state()
  // resumes there, so the batches that follow are those an uninterrupted run would have had; a
  // state written with another batch size or shard resumes at the same sample of the epoch,
  // which must begin a step of this loader (an error says so otherwise).
  io::State state() const;
  void load_state(const io::State& s);
  int64_t out_height() const { return transform_.out_height(); }
  int64_t out_width() const { return transform_.out_width(); }
  int64_t channels() const { return dataset_.channels(); }
  int64_t num_classes() const { return dataset_.num_classes(); }
  const LoaderOptions& options() const { return opt_; }

  // One batch as a pure function of (options, epoch order, batch index): what the workers run,
  // rows [row_begin, row_end) at a time, then finish_batch() once.
  struct Built {
    int64_t rows = 0;
    Tensor pixels;  // u8 [rows, H, W, C], from the loader's host allocator
    std::vector<int64_t> labels;
    std::vector<std::vector<EraseBox>> erase;  // per row
    MixupResult mix;
    std::vector<float> soft;
  };
  void build(int64_t epoch, const std::vector<int64_t>* order, int64_t index, Built& out) const;
  // A built batch as the consumer receives it.
  Batch to_batch(Built&& b, int64_t epoch, int64_t index) const;
  // The epoch's sample order (null: identity).
  std::shared_ptr<const std::vector<int64_t>> epoch_order(int64_t epoch) const;

 private:
  void start_rows(int64_t index, Built& out) const;
  void build_rows(int64_t epoch, const std::vector<int64_t>* order, int64_t index,
                  int64_t row_begin, int64_t row_end, Built& out) const;
  void finish_batch(int64_t epoch, int64_t index, Built& out) const;
  // Sample `sample` at position `pos` through the transform into img; returns its label.
  int64_t load_sample(int64_t epoch, const std::vector<int64_t>* order, int64_t pos, int64_t sample,
                      RawSample& raw, Image& img) const;
  void worker_loop();

  const Dataset& dataset_;
  LoaderOptions opt_;
  SampleTransform transform_;
  int64_t chunk_ = 1;  // samples per worker task
  mutable std::atomic<int64_t> bad_samples_{0};
  mutable std::mutex warn_mu_;
  Tensor table_;            // f32 [C, 256]
  Allocator* pixel_alloc_;  // pinned host memory or the CPU allocator (options.pin_memory)

  // Shared with the workers, under mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  bool active_ = false;
  uint64_t generation_ = 0;
  int64_t epoch_ = -1;
  std::shared_ptr<const std::vector<int64_t>> order_;  // null: identity order
  int64_t claim_ = 0, claim_row_ = 0, consume_ = 0, end_ = 0;
  struct InFlight {
    Built built;
    int64_t chunks_left = 0;
    bool done = false;
    std::exception_ptr error;
  };
  std::map<int64_t, std::shared_ptr<InFlight>> batches_;
};

}  // namespace mokd::data
