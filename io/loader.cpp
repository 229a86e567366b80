// The prefetching loader: worker threads claim chunks of samples of the batches in order, build
// them independently into the batch's buffers, and the worker that completes a batch draws its
// mix; the consumer takes batches in order from an index-keyed bounded buffer.
#include "io/loader.h"

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "engine/error.h"
#include "engine/ops.h"

namespace mokd::data {

Loader::Loader(const Dataset& dataset, LoaderOptions options)
    : dataset_(dataset),
      opt_(std::move(options)),
      transform_(opt_.transform, dataset.height(), dataset.width(), dataset.channels()),
      pixel_alloc_(&host_staging_allocator(opt_.device, opt_.pin_memory)) {
  MOKD_CHECK(opt_.batch_size > 0, "Loader: batch_size must be > 0, got ", opt_.batch_size);
  MOKD_CHECK(opt_.num_workers >= 0, "Loader: num_workers must be >= 0, got ", opt_.num_workers);
  MOKD_CHECK(opt_.prefetch >= 1, "Loader: prefetch must be >= 1, got ", opt_.prefetch);
  MOKD_CHECK(dataset_.size() > 0, "Loader: the split ", dataset_.location(), " holds no samples");
  MOKD_CHECK(!opt_.mixup.soft_targets() || dataset_.num_classes() > 0,
             "Loader: mixup needs num_classes > 0");
  MOKD_CHECK(opt_.mixup.label_smoothing >= 0 && opt_.mixup.label_smoothing < 1,
             "Loader: label_smoothing must be in [0, 1), got ", opt_.mixup.label_smoothing);
  MOKD_CHECK(opt_.repeats <= 1 || opt_.shuffle,
             "Loader: repeated augmentation samples a shuffled order; it needs shuffle");
  const LoaderOptions::Shard& sh = opt_.shard;
  MOKD_CHECK(sh.group >= 1 && sh.count >= 1 && sh.first >= 0 && sh.first + sh.count <= sh.group,
             "Loader: shard takes batches [", sh.first, ", ", sh.first + sh.count, ") of steps of ",
             sh.group, "; expected 0 <= first < first + count <= group");
  opt_.repeated.num_repeats = std::max(1, opt_.repeats);
  const std::vector<float> table = normalize_table(opt_.normalize, dataset_.channels());
  table_ = Tensor::from_vector(table, {dataset_.channels(), 256});
  // Four tasks per worker and batch: variable decode costs still balance.
  const int64_t tasks = 4 * std::max(1, opt_.num_workers);
  chunk_ = std::max<int64_t>(1, (opt_.batch_size + tasks - 1) / tasks);
  for (int i = 0; i < opt_.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t Loader::samples_per_epoch() const {
  return opt_.repeats > 1 ? repeated_augment_length(dataset_.size(), opt_.repeated, 1)
                          : dataset_.size();
}

int64_t Loader::batches_per_epoch() const {
  const int64_t n = samples_per_epoch(), b = opt_.batch_size;
  const LoaderOptions::Shard& sh = opt_.shard;
  if (sh.group == 1) return opt_.drop_last ? n / b : (n + b - 1) / b;
  return (n / b) / sh.group * sh.count;
}

int64_t Loader::global_index(int64_t k) const {
  const LoaderOptions::Shard& sh = opt_.shard;
  return (k / sh.count) * sh.group + sh.first + k % sh.count;
}

std::shared_ptr<const std::vector<int64_t>> Loader::epoch_order(int64_t epoch) const {
  if (opt_.repeats > 1)
    return std::make_shared<const std::vector<int64_t>>(
        repeated_augment_indices(dataset_.size(), epoch, opt_.seed, opt_.repeated, 0, 1));
  if (opt_.shuffle)
    return std::make_shared<const std::vector<int64_t>>(
        epoch_permutation(opt_.seed, epoch, dataset_.size()));
  return nullptr;
}

void Loader::start_epoch(int64_t epoch, int64_t start_batch) {
  const int64_t total = batches_per_epoch();
  MOKD_CHECK(epoch >= 0, "Loader::start_epoch: epoch must be >= 0, got ", epoch);
  MOKD_CHECK(start_batch >= 0 && start_batch <= total, "Loader::start_epoch: start_batch ",
             start_batch, " outside [0, ", total, "]");
  std::shared_ptr<const std::vector<int64_t>> order = epoch_order(epoch);
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++generation_;  // samples still being built for the previous epoch are discarded
    epoch_ = epoch;
    order_ = std::move(order);
    claim_ = consume_ = start_batch;
    claim_row_ = 0;
    end_ = total;
    batches_.clear();
    active_ = true;
  }
  cv_.notify_all();
}

void Loader::start_rows(int64_t index, Built& out) const {
  const int64_t first = index * opt_.batch_size;
  const int64_t rows = std::min(opt_.batch_size, samples_per_epoch() - first);
  out.rows = rows;
  out.pixels = Tensor::empty_in(
      *pixel_alloc_, {rows, transform_.out_height(), transform_.out_width(), transform_.channels()},
      DType::U8);
  out.labels.resize(static_cast<size_t>(rows));
  out.erase.assign(static_cast<size_t>(rows), {});
  out.mix = MixupResult{};
  out.soft.clear();
}

void Loader::build_rows(int64_t epoch, const std::vector<int64_t>* order, int64_t index,
                        int64_t row_begin, int64_t row_end, Built& out) const {
  const int64_t oh = transform_.out_height(), ow = transform_.out_width(),
                c = transform_.channels(), per = oh * ow * c;
  thread_local RawSample raw;
  thread_local Image img;
  for (int64_t i = row_begin; i < row_end; ++i) {
    const int64_t pos = index * opt_.batch_size + i;
    const int64_t sample = order ? (*order)[static_cast<size_t>(pos)] : pos;
    out.labels[static_cast<size_t>(i)] = load_sample(epoch, order, pos, sample, raw, img);
    std::memcpy(static_cast<uint8_t*>(out.pixels.raw_data()) + i * per, img.data(),
                static_cast<size_t>(per));
    if (opt_.random_erasing) {
      Rng erase_rng(data_key(opt_.seed, epoch, DataPurpose::Erase, pos));
      out.erase[static_cast<size_t>(i)] =
          plan_random_erasing(opt_.erasing, oh, ow, c, static_cast<int32_t>(i), erase_rng);
    }
  }
}

int64_t Loader::load_sample(int64_t epoch, const std::vector<int64_t>* order, int64_t pos,
                            int64_t sample, RawSample& raw, Image& img) const {
  const int64_t n = static_cast<int64_t>(order ? order->size() : dataset_.size());
  for (int64_t k = 0;; ++k) {
    try {
      dataset_.fetch(sample, &raw);
      Rng rng(data_key(opt_.seed, epoch, DataPurpose::Sample, pos));
      transform_.apply(raw, dataset_.source(sample), rng, img);
      return raw.label;
    } catch (const Error& e) {
      const int64_t seen = ++bad_samples_;
      if (!opt_.skip_bad_samples)
        throw Error(std::string(e.what()) + " (" + std::to_string(seen) +
                    " unreadable sample(s) seen; data.bad_samples = \"skip\" replaces them)");
      {
        std::lock_guard<std::mutex> lock(warn_mu_);
        std::fprintf(stderr, "warning: skipping an unreadable sample (%lld so far): %s\n",
                     static_cast<long long>(seen), e.what());
      }
      MOKD_CHECK(k < 64, dataset_.location(), ": 64 unreadable samples in a row after ",
                 dataset_.source(sample), "; the split looks broken");
      // The next sample of the order stands in, with this position's randomness.
      const int64_t next = (pos + k + 1) % n;
      sample = order ? (*order)[static_cast<size_t>(next)] : next;
    }
  }
}

void Loader::finish_batch(int64_t epoch, int64_t index, Built& out) const {
  out.soft.clear();
  out.mix = MixupResult{};
  if (!opt_.mixup.soft_targets()) return;
  out.soft.resize(static_cast<size_t>(out.rows * dataset_.num_classes()));
  Rng rng(data_key(opt_.seed, epoch, DataPurpose::Batch, index));
  out.mix = sample_mixup(opt_.mixup, transform_.out_height(), transform_.out_width(), rng);
  mixup_targets(out.labels.data(), out.rows, dataset_.num_classes(), out.mix.lam,
                opt_.mixup.label_smoothing, out.soft.data());
}

void Loader::build(int64_t epoch, const std::vector<int64_t>* order, int64_t index,
                   Built& out) const {
  start_rows(index, out);
  build_rows(epoch, order, index, 0, out.rows, out);
  finish_batch(epoch, index, out);
}

void Loader::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return stop_ || (active_ && claim_ < end_ && claim_ < consume_ + opt_.prefetch);
    });
    if (stop_) return;
    const int64_t index = claim_, row_begin = claim_row_;
    std::shared_ptr<InFlight>& slot = batches_[index];
    if (!slot) {  // the batch's first chunk: size its buffers once
      slot = std::make_shared<InFlight>();
      try {
        // Under the lock: every chunk writes into these buffers. A pinned block is allocated
        // here (a recycled one from the first few batches on, at no cost).
        start_rows(global_index(index), slot->built);
      } catch (...) {  // no memory for the batch: it fails, and next() rethrows at it
        slot->error = std::current_exception();
        slot->done = true;
        ++claim_;
        claim_row_ = 0;
        cv_.notify_all();
        continue;
      }
      slot->chunks_left = (slot->built.rows + chunk_ - 1) / chunk_;
    }
    std::shared_ptr<InFlight> f = slot;  // kept alive even if start_epoch() drops the batch
    const int64_t row_end = std::min(f->built.rows, row_begin + chunk_);
    claim_row_ = row_end;
    if (row_end == f->built.rows) {
      ++claim_;
      claim_row_ = 0;
    }
    const uint64_t gen = generation_;
    const int64_t epoch = epoch_;
    std::shared_ptr<const std::vector<int64_t>> order = order_;
    lock.unlock();
    std::exception_ptr error;
    try {
      build_rows(epoch, order.get(), global_index(index), row_begin, row_end, f->built);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (gen != generation_) continue;  // the epoch was restarted meanwhile
    if (error && !f->error) f->error = error;
    if (--f->chunks_left > 0) continue;
    if (!f->error) {  // the last chunk: the batch-level steps, outside the lock
      lock.unlock();
      try {
        finish_batch(epoch, global_index(index), f->built);
      } catch (...) {
        error = std::current_exception();
      }
      lock.lock();
      if (gen != generation_) continue;
      if (error) f->error = error;
    }
    f->done = true;
    cv_.notify_all();
  }
}

Batch Loader::to_batch(Built&& b, int64_t epoch, int64_t index) const {
  Batch out;
  out.pixels = std::move(b.pixels);
  out.table = table_;
  for (const std::vector<EraseBox>& row : b.erase)
    out.erase.insert(out.erase.end(), row.begin(), row.end());
  out.mix = mix_spec(b.mix);
  out.labels = Tensor::empty({b.rows}, DType::I64);
  std::memcpy(out.labels.data<int64_t>(), b.labels.data(), b.labels.size() * sizeof(int64_t));
  if (!b.soft.empty()) {
    out.soft_targets = Tensor::empty({b.rows, dataset_.num_classes()}, DType::F32);
    std::memcpy(out.soft_targets.data<float>(), b.soft.data(), b.soft.size() * sizeof(float));
  }
  out.epoch = epoch;
  out.index = index;
  return out;
}

Tensor Batch::images(Device device) const {
  MOKD_CHECK(pixels.defined() && table.defined(), "Batch::images: the batch holds no pixels");
  ImageBatchParams p;
  p.boxes = erase.data();
  p.num_boxes = static_cast<int64_t>(erase.size());
  p.mix = mix;
  return prepare_images(pixels.to(device), table.to(device), p);
}

io::State Loader::state() const {
  const LoaderOptions::Shard& sh = opt_.shard;
  const int64_t k = active_ ? consume_ : 0;
  MOKD_CHECK(k % sh.count == 0 || k == batches_per_epoch(), "Loader::state: the position (batch ",
             k, ") is inside a step of ", sh.count, " batches");
  io::State s;
  s.counters["epoch"] = active_ ? epoch_ : 0;
  s.counters["batch_in_epoch"] = sh.group == 1 ? k : (k / sh.count) * sh.group;
  s.counters["batch_size"] = opt_.batch_size;
  return s;
}

void Loader::load_state(const io::State& s) {
  const int64_t epoch = s.counter("epoch", "loader");
  const int64_t g = s.counter("batch_in_epoch", "loader");
  // A state without "batch_size" was written before shards existed: its batches were whole
  // steps (the global batch).
  const int64_t b_then = s.counters.count("batch_size") ? s.counters.at("batch_size")
                                                        : opt_.batch_size * opt_.shard.group;
  MOKD_CHECK(g >= 0 && b_then > 0, "loader: the checkpoint's position (batch ", g, " of size ",
             b_then, ") is not a position");
  const LoaderOptions::Shard& sh = opt_.shard;
  if (sh.group == 1 && b_then == opt_.batch_size) return start_epoch(epoch, g);
  const int64_t samples = g * b_then, per_step = opt_.batch_size * sh.group;
  const int64_t steps = batches_per_epoch() / sh.count;
  if (samples >= steps * per_step) return start_epoch(epoch, batches_per_epoch());  // epoch done
  MOKD_CHECK(samples % per_step == 0, "loader: the checkpoint stopped after ", samples,
             " samples of epoch ", epoch + 1, ", which is not a whole number of steps of ",
             per_step, " samples (", sh.group, " batches of ", opt_.batch_size, ")");
  start_epoch(epoch, samples / per_step * sh.count);
}

bool Loader::next(Batch& batch) {
  if (!active_) start_epoch(0);
  if (workers_.empty()) {
    if (consume_ >= end_) return false;
    Built b;
    build(epoch_, order_.get(), global_index(consume_), b);
    batch = to_batch(std::move(b), epoch_, global_index(consume_));
    ++consume_;
    return true;
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (consume_ >= end_) return false;
  const int64_t index = consume_;
  cv_.wait(lock, [&] {
    auto it = batches_.find(index);
    return it != batches_.end() && it->second && it->second->done;
  });
  std::shared_ptr<InFlight> f = batches_[index];
  if (f->error) std::rethrow_exception(f->error);  // again at every call: the batch stays failed
  batches_.erase(index);
  ++consume_;
  lock.unlock();
  cv_.notify_all();  // a slot is free: workers may claim the next batch
  batch = to_batch(std::move(f->built), epoch_, global_index(index));
  return true;
}

}  // namespace mokd::data
