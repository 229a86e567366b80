// A deterministic prefetching batch loader: epoch permutations and per-sample augmentation keyed by
// (seed, epoch, position), so batches are bit-identical whatever the number of worker threads and
// an epoch can be resumed at any batch.
#pragma once
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "engine/tensor.h"
#include "io/augment.h"
#include "io/dataset.h"
#include "io/state.h"

namespace mokd::data {

struct LoaderOptions {
  int64_t batch_size = 128;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;
  int num_workers = 2;     // threads building batches; 0 builds them in next()'s thread
  int prefetch = 4;        // batches built ahead of the consumer (>= 1)
  int64_t image_size = 0;  // datasets of encoded files: decoded images are resized to this square
  AugmentOptions augment;
  MixupOptions mixup;   // soft targets when mixup, cutmix or label smoothing is on
  Normalize normalize;  // (x / 255 - mean) / std per channel
};

struct Batch {
  Tensor images;        // f32 [B, H, W, C] on the CPU
  Tensor labels;        // i64 [B] (the un-mixed labels)
  Tensor soft_targets;  // f32 [B, num_classes] when options.mixup.soft_targets(), else undefined
  int64_t epoch = -1, index = -1;
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

  int64_t batches_per_epoch() const;
  int64_t epoch() const { return epoch_; }
  int64_t next_index() const { return consume_; }

  // The position for a checkpoint: counters "epoch" and "batch_in_epoch" (the batch next() returns
  // next; batches_per_epoch() once the epoch is exhausted). Before any start_epoch(): epoch 0,
  // batch 0. load_state() resumes there (start_epoch(epoch, batch_in_epoch)), so the batches that
  // follow are those an uninterrupted run would have had.
  io::State state() const;
  void load_state(const io::State& s);
  int64_t out_height() const { return out_h_; }
  int64_t out_width() const { return out_w_; }
  int64_t channels() const { return dataset_.channels(); }
  int64_t num_classes() const { return dataset_.num_classes(); }
  const LoaderOptions& options() const { return opt_; }

  // One batch as a pure function of (options, epoch order, batch index): what the workers run.
  struct Built {
    int64_t rows = 0;
    std::vector<float> images, soft;
    std::vector<int64_t> labels;
  };
  void build(int64_t epoch, const std::vector<int64_t>* order, int64_t index, Built& out) const;

 private:
  void worker_loop();
  Batch to_batch(Built&& b, int64_t index) const;

  const Dataset& dataset_;
  LoaderOptions opt_;
  int64_t in_h_ = 0, in_w_ = 0, out_h_ = 0, out_w_ = 0;
  std::vector<float> table_;

  // Shared with the workers, under mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> workers_;
  bool stop_ = false;
  bool active_ = false;
  uint64_t generation_ = 0;
  int64_t epoch_ = -1;
  std::shared_ptr<const std::vector<int64_t>> order_;  // null: identity order
  int64_t claim_ = 0, consume_ = 0, end_ = 0;
  std::map<int64_t, Built> ready_;
  std::map<int64_t, std::exception_ptr> failed_;
};

}  // namespace mokd::data
