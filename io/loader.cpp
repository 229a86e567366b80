// The prefetching loader: worker threads claim batch indices in order, build them independently and
// hand them to the consumer through an index-keyed bounded buffer.
#include "io/loader.h"

#include <cstring>

#include "engine/error.h"
#include "io/decode.h"

namespace mokd::data {

Loader::Loader(const Dataset& dataset, LoaderOptions options)
    : dataset_(dataset), opt_(std::move(options)) {
  MOKD_CHECK(opt_.batch_size > 0, "Loader: batch_size must be > 0, got ", opt_.batch_size);
  MOKD_CHECK(opt_.num_workers >= 0, "Loader: num_workers must be >= 0, got ", opt_.num_workers);
  MOKD_CHECK(opt_.prefetch >= 1, "Loader: prefetch must be >= 1, got ", opt_.prefetch);
  MOKD_CHECK(dataset_.size() > 0, "Loader: the dataset is empty");
  MOKD_CHECK(!opt_.mixup.soft_targets() || dataset_.num_classes() > 0,
             "Loader: mixup needs num_classes > 0");
  MOKD_CHECK(opt_.mixup.label_smoothing >= 0 && opt_.mixup.label_smoothing < 1,
             "Loader: label_smoothing must be in [0, 1), got ", opt_.mixup.label_smoothing);
  in_h_ = dataset_.fixed_size() ? dataset_.height() : opt_.image_size;
  in_w_ = dataset_.fixed_size() ? dataset_.width() : opt_.image_size;
  MOKD_CHECK(in_h_ > 0 && in_w_ > 0, "Loader: ", dataset_.location(),
             " holds images of any size; set the size to resize them to (data.image_size)");
  augmented_size(opt_.augment, in_h_, in_w_, &out_h_, &out_w_);
  table_ = normalize_table(opt_.normalize, dataset_.channels());
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

int64_t Loader::batches_per_epoch() const {
  const int64_t n = dataset_.size(), b = opt_.batch_size;
  return opt_.drop_last ? n / b : (n + b - 1) / b;
}

void Loader::start_epoch(int64_t epoch, int64_t start_batch) {
  const int64_t total = batches_per_epoch();
  MOKD_CHECK(epoch >= 0, "Loader::start_epoch: epoch must be >= 0, got ", epoch);
  MOKD_CHECK(start_batch >= 0 && start_batch <= total, "Loader::start_epoch: start_batch ",
             start_batch, " outside [0, ", total, "]");
  std::shared_ptr<const std::vector<int64_t>> order;
  if (opt_.shuffle)
    order = std::make_shared<const std::vector<int64_t>>(
        epoch_permutation(opt_.seed, epoch, dataset_.size()));
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++generation_;  // batches still being built for the previous epoch are discarded
    epoch_ = epoch;
    order_ = std::move(order);
    claim_ = consume_ = start_batch;
    end_ = total;
    ready_.clear();
    failed_.clear();
    active_ = true;
  }
  cv_.notify_all();
}

void Loader::build(int64_t epoch, const std::vector<int64_t>* order, int64_t index,
                   Built& out) const {
  const int64_t n = dataset_.size(), first = index * opt_.batch_size;
  const int64_t rows = std::min(opt_.batch_size, n - first);
  const int64_t h = in_h_, w = in_w_, c = dataset_.channels();
  const int64_t per = out_h_ * out_w_ * c;
  out.rows = rows;
  out.images.resize(static_cast<size_t>(rows * per));
  out.labels.resize(static_cast<size_t>(rows));
  std::vector<uint8_t> raw(static_cast<size_t>(h * w * c)), aug(static_cast<size_t>(per)), scratch;
  const bool augmenting = opt_.augment.enabled();
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t pos = first + i;
    const int64_t sample = order ? (*order)[static_cast<size_t>(pos)] : pos;
    RawSample rs;
    dataset_.fetch(sample, &rs);
    out.labels[static_cast<size_t>(i)] = rs.label;
    if (rs.encoded) {
      Image rgb = decode_image(rs.bytes.data(), rs.bytes.size(), dataset_.source(sample));
      resize_bilinear(rgb.data(), rgb.height, rgb.width, 3, Box{0, 0, rgb.height, rgb.width}, h, w,
                      raw.data());
    } else {
      MOKD_CHECK(rs.height == h && rs.width == w && rs.channels == c, dataset_.source(sample),
                 ": image of ", rs.height, "x", rs.width, "x", rs.channels, ", expected ", h, "x",
                 w, "x", c);
      std::memcpy(raw.data(), rs.bytes.data(), rs.bytes.size());
    }
    const uint8_t* src = raw.data();
    if (augmenting) {
      Rng rng(data_key(opt_.seed, epoch, DataPurpose::Sample, pos));
      augment(opt_.augment, raw.data(), h, w, c, rng, aug.data(), scratch);
      src = aug.data();
    }
    normalize(src, out_h_ * out_w_, c, table_, out.images.data() + i * per);
  }
  out.soft.clear();
  if (opt_.mixup.soft_targets()) {
    out.soft.resize(static_cast<size_t>(rows * dataset_.num_classes()));
    Rng rng(data_key(opt_.seed, epoch, DataPurpose::Batch, index));
    mixup_batch(opt_.mixup, out.images.data(), rows, out_h_, out_w_, c, out.labels.data(),
                dataset_.num_classes(), rng, out.soft.data());
  }
}

void Loader::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] {
      return stop_ || (active_ && claim_ < end_ && claim_ < consume_ + opt_.prefetch);
    });
    if (stop_) return;
    const int64_t index = claim_++;
    const uint64_t gen = generation_;
    const int64_t epoch = epoch_;
    std::shared_ptr<const std::vector<int64_t>> order = order_;
    lock.unlock();
    Built built;
    std::exception_ptr error;
    try {
      build(epoch, order.get(), index, built);
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    if (gen != generation_) continue;  // the epoch was restarted meanwhile
    if (error)
      failed_[index] = error;
    else
      ready_[index] = std::move(built);
    cv_.notify_all();
  }
}

Batch Loader::to_batch(Built&& b, int64_t index) const {
  // Tensors are allocated here, in the consumer's thread (the CPU allocator's counters are not
  // atomic).
  Batch out;
  out.images = Tensor::empty({b.rows, out_h_, out_w_, dataset_.channels()}, DType::F32);
  std::memcpy(out.images.data<float>(), b.images.data(), b.images.size() * sizeof(float));
  out.labels = Tensor::empty({b.rows}, DType::I64);
  std::memcpy(out.labels.data<int64_t>(), b.labels.data(), b.labels.size() * sizeof(int64_t));
  if (!b.soft.empty()) {
    out.soft_targets = Tensor::empty({b.rows, dataset_.num_classes()}, DType::F32);
    std::memcpy(out.soft_targets.data<float>(), b.soft.data(), b.soft.size() * sizeof(float));
  }
  out.epoch = epoch_;
  out.index = index;
  return out;
}

io::State Loader::state() const {
  io::State s;
  s.counters["epoch"] = active_ ? epoch_ : 0;
  s.counters["batch_in_epoch"] = active_ ? consume_ : 0;
  return s;
}

void Loader::load_state(const io::State& s) {
  start_epoch(s.counter("epoch", "loader"), s.counter("batch_in_epoch", "loader"));
}

bool Loader::next(Batch& batch) {
  if (!active_) start_epoch(0);
  if (workers_.empty()) {
    if (consume_ >= end_) return false;
    Built b;
    build(epoch_, order_.get(), consume_, b);
    batch = to_batch(std::move(b), consume_);
    ++consume_;
    return true;
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (consume_ >= end_) return false;
  const int64_t index = consume_;
  cv_.wait(lock, [&] { return ready_.count(index) || failed_.count(index); });
  if (auto f = failed_.find(index); f != failed_.end()) std::rethrow_exception(f->second);
  Built b = std::move(ready_[index]);
  ready_.erase(index);
  ++consume_;
  lock.unlock();
  cv_.notify_all();  // a slot is free: workers may claim the next batch
  batch = to_batch(std::move(b), index);
  return true;
}

}  // namespace mokd::data
