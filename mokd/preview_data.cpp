// preview-data (mokd/preview_data.h): the first samples of the training loader's epoch 0, train
// and eval transforms side by side in a PNG, and as tensors.
#include "mokd/preview_data.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "engine/error.h"
#include "io/encode_png.h"
#include "io/loader.h"
#include "io/safetensors.h"
#include "io/transform.h"
#include "mokd/checkpoint.h"
#include "mokd/setup.h"

namespace mokd {

namespace {

// Copies an h x w x c image into the RGB canvas at (x, y); grey goes into all three channels.
void paste(const data::Image& img, int64_t x, int64_t y, data::Image& canvas) {
  for (int64_t r = 0; r < img.height; ++r) {
    const uint8_t* src = img.row(r);
    uint8_t* dst = canvas.row(y + r) + 3 * x;
    if (img.channels == 3) {
      std::memcpy(dst, src, static_cast<size_t>(3 * img.width));
    } else {
      for (int64_t i = 0; i < img.width; ++i) dst[3 * i] = dst[3 * i + 1] = dst[3 * i + 2] = src[i];
    }
  }
}

}  // namespace

PreviewResult preview_data(const TrainConfig& cfg, const data::Dataset& train,
                           const PreviewOptions& opt) {
  MOKD_CHECK(!opt.out.empty(), "preview-data: --out: name the PNG file to write");
  MOKD_CHECK(opt.count >= 1 && opt.count <= 1024,
             "preview-data: --count must be in [1, 1024], got ", opt.count);
  if (!opt.raw_dir.empty()) {
    std::error_code ec;
    MOKD_CHECK(std::filesystem::is_directory(opt.raw_dir, ec), "preview-data: --raw ", opt.raw_dir,
               " is not a folder (create it first)");
  }
  // The training loader's options without mixup/cutmix (they mix whole batches), one batch of
  // `count` rows built in this thread: rows at positions 0..count-1 of epoch 0, as in training.
  data::LoaderOptions lo = loader_options(cfg, train, true, cfg.run.seed);
  lo.mixup = data::MixupOptions{};
  lo.batch_size = opt.count;
  lo.num_workers = 0;
  lo.drop_last = false;
  const data::Loader loader(train, lo);
  MOKD_CHECK(opt.count <= loader.samples_per_epoch(), "preview-data: --count ", opt.count,
             " exceeds the ", loader.samples_per_epoch(), " samples of an epoch of ",
             train.location());
  const auto order = loader.epoch_order(0);
  data::Loader::Built built;
  loader.build(0, order.get(), 0, built);

  const data::LoaderOptions eo = loader_options(cfg, train, false, cfg.run.seed);
  const data::SampleTransform tt(lo.transform, train.height(), train.width(), train.channels());
  const data::SampleTransform et(eo.transform, train.height(), train.width(), train.channels());
  const int64_t n = opt.count, h = tt.out_height(), w = tt.out_width(), c = tt.channels();
  MOKD_CHECK(et.out_height() == h && et.out_width() == w, "preview-data: the train (", h, "x", w,
             ") and eval (", et.out_height(), "x", et.out_width(), ") outputs differ in size");

  PreviewResult r;
  r.image_height = h;
  r.image_width = w;
  r.channels = c;
  r.columns = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  r.rows = (n + r.columns - 1) / r.columns;
  r.width = r.columns * (2 * w + kPreviewSeparator) + (r.columns - 1) * kPreviewGap;
  r.height = r.rows * h + (r.rows - 1) * kPreviewGap;
  data::Image canvas(r.height, r.width, 3);
  std::fill(canvas.pixels.begin(), canvas.pixels.end(), kPreviewBackground);

  const size_t per = static_cast<size_t>(h * w * c);
  io::U8Array train_u8{{n, h, w, c}, std::vector<uint8_t>(per * n)};
  io::U8Array eval_u8{{n, h, w, c}, std::vector<uint8_t>(per * n)};
  std::vector<int64_t> labels(static_cast<size_t>(n));
  nlohmann::json sources = nlohmann::json::array();
  data::RawSample raw;
  data::Image img;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t index = order ? (*order)[static_cast<size_t>(i)] : i;
    r.indices.push_back(index);
    train.fetch(index, &raw);
    labels[static_cast<size_t>(i)] = raw.label;
    const std::string source = train.source(index);
    sources.push_back(source);
    const int64_t x = (i % r.columns) * (2 * w + kPreviewSeparator + kPreviewGap);
    const int64_t y = (i / r.columns) * (h + kPreviewGap);
    data::Rng rng(data::data_key(cfg.run.seed, 0, data::DataPurpose::Sample, i));
    tt.apply(raw, source, rng, img);
    std::memcpy(train_u8.data.data() + per * i, img.data(), per);
    paste(img, x, y, canvas);
    data::Rng unused(data::data_key(cfg.run.seed, 0, data::DataPurpose::Sample, i));
    et.apply(raw, source, unused, img);
    std::memcpy(eval_u8.data.data() + per * i, img.data(), per);
    paste(img, x + w + kPreviewSeparator, y, canvas);
  }

  check_output_file(opt.out);
  write_file_atomically(opt.out, [&] {
    const std::vector<uint8_t> png = data::encode_png(canvas, opt.out);
    return std::string(png.begin(), png.end());
  }());
  r.png = opt.out;

  if (!opt.raw_dir.empty()) {
    r.raw = (std::filesystem::path(opt.raw_dir) / "preview.safetensors").string();
    io::TensorMap t;
    t["train"] = loader.to_batch(std::move(built), 0, 0).images(Device::cpu());
    t["labels"] = Tensor::from_vector_i64(labels, {n});
    t["indices"] = Tensor::from_vector_i64(r.indices, {n});
    io::Metadata meta;
    meta["seed"] = std::to_string(cfg.run.seed);
    meta["epoch"] = "0";
    meta["sources"] = sources.dump();
    meta["mean"] = nlohmann::json(lo.normalize.mean).dump();
    meta["std"] = nlohmann::json(lo.normalize.std).dump();
    meta["config"] = to_toml(cfg);
    check_output_file(r.raw);
    check_output_file(r.raw + ".tmp." + std::to_string(::getpid()));
    io::save_safetensors(r.raw, t, {{"train_u8", train_u8}, {"eval_u8", eval_u8}}, meta);
  }
  return r;
}

}  // namespace mokd
