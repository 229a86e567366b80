// bench-data (mokd/bench_data.h): per-stage throughput of the input pipeline on N threads, then
// the Loader end to end.
#include "mokd/bench_data.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "engine/error.h"
#include "io/decode.h"
#include "io/loader.h"
#include "io/random_erasing.h"
#include "io/random_resized_crop.h"
#include "io/resample.h"
#include "io/transform.h"
#include "mokd/setup.h"

namespace mokd {

namespace {

using Clock = std::chrono::steady_clock;

// One sample of the subset, read once before timing.
struct Held {
  data::RawSample raw;
  std::string source;
};

// A thread's buffers, reused from one sample to the next as a loader worker's are.
struct Buffers {
  data::Image decoded, out;
  std::vector<EraseBox> erase;
};

// One sample's work at a position of the epoch.
using Stage = std::function<void(const Held&, int64_t position, Buffers&)>;

struct Timed {
  int64_t images = 0;
  double seconds = 0;
};

// Runs `stage` on `threads` threads until `seconds` have passed: each thread first does one
// untimed sample (its decoder, scratch buffers and caches warm), then all start together.
Timed time_stage(const std::vector<Held>& subset, int threads, double seconds, const Stage& stage) {
  const int64_t n = static_cast<int64_t>(subset.size());
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  Clock::time_point start, deadline;  // written before `go`, read after it
  std::vector<int64_t> counts(threads, 0);
  std::vector<double> ends(threads, 0);
  std::vector<std::exception_ptr> errors(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      Buffers b;
      bool ok = true;
      try {
        stage(subset[static_cast<size_t>(t % n)], t, b);
      } catch (...) {
        errors[t] = std::current_exception();
        ok = false;
      }
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      if (!ok) return;
      try {
        for (int64_t k = 0;; ++k) {
          const int64_t position = t + k * threads;
          stage(subset[static_cast<size_t>(position % n)], position, b);
          ++counts[t];
          const Clock::time_point now = Clock::now();
          if (now >= deadline) {
            ends[t] = std::chrono::duration<double>(now - start).count();
            break;
          }
        }
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  while (ready.load() < threads) std::this_thread::yield();
  start = Clock::now();
  deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  go.store(true, std::memory_order_release);
  for (std::thread& th : pool) th.join();
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  Timed r;
  for (int t = 0; t < threads; ++t) {
    r.images += counts[t];
    r.seconds = std::max(r.seconds, ends[t]);
  }
  return r;
}

// The split's raw pixels as an image (splits held decoded), as the transform takes them.
void pixels_of(const data::RawSample& raw, data::Image& out) {
  out.height = raw.height;
  out.width = raw.width;
  out.channels = raw.channels;
  out.pixels = raw.bytes;
}

std::string format_number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, v >= 100 ? "%.0f" : v >= 10 ? "%.1f" : "%.2f", v);
  return buf;
}

// What the train transform and the loader's per-sample steps do, in order, for the notes.
// `in_h` x `in_w`: the split's fixed size, 0 x 0 for image files.
std::string describe_train(const TrainConfig& cfg, const data::LoaderOptions& o, int64_t in_h,
                           int64_t in_w, int64_t oh, int64_t ow) {
  const data::TransformOptions& t = o.transform;
  const data::AugmentOptions& a = t.augment;
  std::ostringstream s;
  s << (in_h > 0 ? "the split's pixels, " : "decode, ");
  if (a.random_resized_crop)
    s << "RandomResizedCrop to " << oh << "x" << ow << " (scale " << a.scale_min << "-"
      << a.scale_max << ", ratio " << a.ratio_min << "-" << a.ratio_max << ", "
      << data::interpolation_name(t.interpolation) << ")";
  else if (in_h == oh && in_w == ow)
    s << "as stored (" << oh << "x" << ow << ")";
  else
    s << "resize + centre crop to " << oh << "x" << ow << " ("
      << data::interpolation_name(t.interpolation) << ")";
  if (a.crop_padding >= 0) s << ", random crop with padding " << a.crop_padding;
  if (a.hflip) s << ", hflip";
  if (t.rand_augment)
    s << ", RandAugment " << cfg.data.auto_augment;
  else if (t.color_jitter > 0)
    s << ", colour jitter " << t.color_jitter;
  if (o.random_erasing)
    s << ", random erasing drawn (p " << o.erasing.probability << ", " << cfg.data.remode
      << ", count " << o.erasing.min_count << ")";
  s << "; to uint8, as a loader worker does (normalisation, erasing and mixing run on the training "
       "device)";
  return s.str();
}

double load_average() {
  std::ifstream f("/proc/loadavg");
  double v = -1;
  if (f) f >> v;
  return f ? v : -1;
}

}  // namespace

std::vector<int> default_thread_counts(int cores) {
  cores = std::max(1, cores);
  std::vector<int> out;
  for (int t = 1; t <= cores; t *= 2) out.push_back(t);
  if (out.back() != cores) out.push_back(cores);
  return out;
}

std::vector<int> parse_thread_counts(const std::string& text, const std::string& what) {
  std::vector<int> out;
  std::stringstream ss(text);
  std::string item;
  auto bad = [&] {
    MOKD_FAIL(what,
              ": expected thread counts between 1 and 1024 separated by commas (1,2,4), got '",
              text, "'");
  };
  while (std::getline(ss, item, ',')) {
    if (item.empty() || item.size() > 4 ||
        item.find_first_not_of("0123456789") != std::string::npos)
      bad();
    const int v = std::stoi(item);
    if (v < 1 || v > 1024) bad();
    out.push_back(v);
  }
  if (out.empty() || text.back() == ',') bad();
  return out;
}

BenchDataResult bench_data(const TrainConfig& cfg, const data::Dataset& train,
                           const BenchDataOptions& opt) {
  MOKD_CHECK(opt.seconds > 0 && opt.seconds <= 3600, "--seconds: must be in (0, 3600], got ",
             opt.seconds);
  MOKD_CHECK(opt.samples >= 1, "--samples: must be >= 1, got ", opt.samples);
  for (int t : opt.threads)
    MOKD_CHECK(t >= 1 && t <= 1024, "--threads: thread counts must be in [1, 1024], got ", t);
  MOKD_CHECK(train.size() > 0, "bench-data: the training split ", train.location(),
             " holds no samples");
  BenchDataResult r;
  r.split = train.location();
  r.split_size = train.size();
  r.cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::vector<int> counts = opt.threads.empty() ? default_thread_counts(r.cores) : opt.threads;

  const data::LoaderOptions lo = loader_options(cfg, train, true, cfg.run.seed);
  const data::LoaderOptions eo = loader_options(cfg, train, false, cfg.run.seed);
  const data::SampleTransform tt(lo.transform, train.height(), train.width(), train.channels());
  const data::SampleTransform et(eo.transform, train.height(), train.width(), train.channels());
  const int64_t oh = tt.out_height(), ow = tt.out_width(), c = tt.channels();
  r.out_height = oh;
  r.out_width = ow;
  r.channels = c;
  // The normalisations are checked here, as the loaders would check them.
  data::normalize_table(lo.normalize, c);
  data::normalize_table(eo.normalize, c);

  // The subset: samples spread evenly over the split (ImageFolder orders files by class).
  const int64_t n = std::min(opt.samples, train.size());
  std::vector<Held> subset(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t index = i * train.size() / n;
    train.fetch(index, &subset[static_cast<size_t>(i)].raw);
    subset[static_cast<size_t>(i)].source = train.source(index);
  }
  r.samples = n;
  r.encoded = subset.front().raw.encoded;

  const uint64_t seed = cfg.run.seed;
  const data::AugmentOptions& a = lo.transform.augment;
  const data::Interpolation interp = lo.transform.interpolation;
  auto decode = [](const Held& h, Buffers& b) {
    if (h.raw.encoded)
      data::decode_image(h.raw.bytes.data(), h.raw.bytes.size(), h.source, b.decoded);
    else
      pixels_of(h.raw, b.decoded);
  };
  struct Named {
    const char* name;
    std::string note;
    Stage run;
  };
  std::vector<Named> stages;
  if (r.encoded)
    stages.push_back({"decode", "the file to RGB (io/decode.h)",
                      [&](const Held& h, int64_t, Buffers& b) { decode(h, b); }});
  {
    std::ostringstream note;
    note << (r.encoded ? "decode" : "the split's pixels") << ", RandomResizedCrop box (scale "
         << a.scale_min << "-" << a.scale_max << ", ratio " << a.ratio_min << "-" << a.ratio_max
         << ") resized to " << oh << "x" << ow << " (" << data::interpolation_name(interp) << ")";
    stages.push_back({"decode+rrc", note.str(), [&](const Held& h, int64_t pos, Buffers& b) {
                        decode(h, b);
                        data::Rng rng(data::data_key(seed, 0, data::DataPurpose::Sample, pos));
                        const data::Box box = data::sample_resized_crop(
                            b.decoded.height, b.decoded.width, a.scale_min, a.scale_max,
                            a.ratio_min, a.ratio_max, rng);
                        data::resize(b.decoded, box, oh, ow, interp, b.out);
                      }});
  }
  stages.push_back({"train", describe_train(cfg, lo, train.height(), train.width(), oh, ow),
                    [&](const Held& h, int64_t pos, Buffers& b) {
                      data::Rng rng(data::data_key(seed, 0, data::DataPurpose::Sample, pos));
                      tt.apply(h.raw, h.source, rng, b.out);
                      if (lo.random_erasing) {
                        data::Rng erase(data::data_key(seed, 0, data::DataPurpose::Erase, pos));
                        b.erase = data::plan_random_erasing(lo.erasing, oh, ow, c, 0, erase);
                      }
                    }});
  {
    std::ostringstream note;
    if (train.fixed_size() && train.height() == oh && train.width() == ow)
      note << "the split's pixels as stored (" << oh << "x" << ow << ")";
    else
      note << (r.encoded ? "decode" : "the split's pixels") << ", resize the shorter side to floor("
           << oh << " / crop_pct " << cfg.data.crop_pct << "), centre crop " << oh << "x" << ow
           << "; to uint8";
    stages.push_back({"eval", note.str(), [&](const Held& h, int64_t pos, Buffers& b) {
                        data::Rng rng(data::data_key(seed, 0, data::DataPurpose::Sample, pos));
                        et.apply(h.raw, h.source, rng, b.out);
                      }});
  }

  const int smallest = *std::min_element(counts.begin(), counts.end());
  for (const Named& s : stages) {
    r.stage_notes.push_back(std::string(s.name) + ": " + s.note);
    double base = 0;
    std::vector<BenchDataRow> rows;
    for (int t : counts) {
      const Timed tm = time_stage(subset, t, opt.seconds, s.run);
      BenchDataRow row;
      row.stage = s.name;
      row.threads = t;
      row.images = tm.images;
      row.seconds = tm.seconds;
      row.images_per_s = tm.seconds > 0 ? tm.images / tm.seconds : 0;
      row.per_thread = row.images_per_s / t;
      if (t == smallest && base == 0) base = row.per_thread;
      rows.push_back(row);
    }
    for (BenchDataRow& row : rows) {
      row.scaling = base > 0 ? row.per_thread / base : 0;
      r.rows.push_back(row);
    }
  }

  // End to end: the training loader as the trainer builds it.
  data::Loader loader(train, lo);
  r.workers = lo.num_workers;
  r.batch_size = lo.batch_size;
  const Clock::time_point t0 = Clock::now();
  int64_t epoch = 0, images = 0, in_epoch = 0;
  loader.start_epoch(epoch);
  data::Batch batch;
  double elapsed = 0;
  while (elapsed < opt.seconds || r.batches == 0) {
    if (!loader.next(batch)) {
      MOKD_CHECK(in_epoch > 0, "bench-data: the loader gave no batch of ", lo.batch_size, " from ",
                 train.location());
      loader.start_epoch(++epoch);
      in_epoch = 0;
      continue;
    }
    ++r.batches;
    ++in_epoch;
    images += batch.size();
    elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  r.loader_seconds = elapsed;
  r.batches_per_s = r.batches / elapsed;
  r.loader_images_per_s = images / elapsed;
  return r;
}

std::string format_bench_data(const BenchDataResult& r) {
  std::ostringstream s;
  s << "bench-data: " << r.split << " (" << r.split_size << " images), out " << r.out_height << "x"
    << r.out_width << "x" << r.channels << "; " << r.cores << " cores";
  const double load = load_average();
  if (load >= 0) s << ", load average " << format_number(load) << " (1 min)";
  s << "\n";
  s << "stages: " << r.samples << " samples spread over the split, read into memory first (file "
    << "reading is not timed); each thread takes its own samples with the loader's random "
    << "streams\n";
  if (!r.encoded)
    s << "  the split is held decoded in memory: there is nothing to decode, no decode stage\n";
  for (const std::string& note : r.stage_notes) s << "  " << note << "\n";
  char line[160];
  std::snprintf(line, sizeof line, "%-12s %7s %12s %12s %8s\n", "stage", "threads", "images/s",
                "per thread", "scaling");
  s << line;
  for (const BenchDataRow& row : r.rows) {
    std::snprintf(line, sizeof line, "%-12s %7d %12s %12s %8.2f\n", row.stage.c_str(), row.threads,
                  format_number(row.images_per_s).c_str(), format_number(row.per_thread).c_str(),
                  row.scaling);
    s << line;
  }
  s << "loader (data.workers=" << r.workers << ", data.batch_size=" << r.batch_size
    << ", files read, mixup included): " << format_number(r.batches_per_s) << " batches/s, "
    << format_number(r.loader_images_per_s) << " images/s (" << r.batches << " batches in "
    << format_number(r.loader_seconds) << " s)\n";
  return s.str();
}

nlohmann::json bench_data_json(const BenchDataResult& r) {
  nlohmann::json j;
  j["split"] = r.split;
  j["split_size"] = r.split_size;
  j["samples_in_memory"] = r.samples;
  j["output"] = {r.out_height, r.out_width, r.channels};
  j["cores"] = r.cores;
  j["stage_notes"] = r.stage_notes;
  nlohmann::json rows = nlohmann::json::array();
  for (const BenchDataRow& row : r.rows)
    rows.push_back({{"stage", row.stage},
                    {"threads", row.threads},
                    {"images", row.images},
                    {"seconds", row.seconds},
                    {"images_per_s", row.images_per_s},
                    {"images_per_s_per_thread", row.per_thread},
                    {"scaling", row.scaling}});
  j["stages"] = rows;
  j["loader"] = {{"workers", r.workers},
                 {"batch_size", r.batch_size},
                 {"batches", r.batches},
                 {"seconds", r.loader_seconds},
                 {"batches_per_s", r.batches_per_s},
                 {"images_per_s", r.loader_images_per_s}};
  return j;
}

}  // namespace mokd
