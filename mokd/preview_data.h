// mokd_train preview-data: what the model is shown. The first `count` samples of the training
// loader's epoch 0 (its order: shuffled, or the repeated-augmentation sampler's), each after the
// configured train transform (uint8, before normalisation) and next to the same sample after the
// eval transform, as one PNG; optionally the same samples as tensors, so that a script can put
// them beside timm's pipeline.
//
// The grid: `columns` = ceil(sqrt(count)) pairs per row, ceil(count / columns) rows. A pair is the
// train image, a kPreviewSeparator-pixel bar, the eval image; pairs are kPreviewGap pixels apart
// both ways. Bars, gaps and unused cells are kPreviewBackground. Grey splits are written as RGB
// (the grey value in each channel). For an H x W output size:
//   width  = columns * (2 W + kPreviewSeparator) + (columns - 1) kPreviewGap
//   height = rows * H + (rows - 1) kPreviewGap
// and sample i's train image starts at x = (i % columns) (2 W + kPreviewSeparator + kPreviewGap),
// y = (i / columns) (H + kPreviewGap); its eval image W + kPreviewSeparator further right.
//
// The raw file (--raw DIR: DIR/preview.safetensors; mokd's own reader refuses its U8 arrays):
//   train_u8  U8  [N, H, W, C]  the train transform's output
//   train     F32 [N, H, W, C]  the loader's rows for those positions: normalised, randomly erased
//                               (mixup and cutmix mix whole batches and are left out)
//   eval_u8   U8  [N, H, W, C]  the eval transform's output of the same samples
//   labels    I64 [N]
//   indices   I64 [N]           the samples' indices in the split (positions 0..N-1 of epoch 0)
// and metadata: seed, epoch ("0"), sources (a JSON list of the samples' files), mean and std
// (JSON lists), config (the resolved configuration as TOML).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/dataset.h"
#include "mokd/config.h"

namespace mokd {

inline constexpr int64_t kPreviewSeparator = 2;
inline constexpr int64_t kPreviewGap = 8;
inline constexpr uint8_t kPreviewBackground = 255;

struct PreviewOptions {
  std::string out;      // the PNG (required)
  int64_t count = 16;   // samples, in [1, 1024] and at most the split's size
  std::string raw_dir;  // "": no raw file
};

struct PreviewResult {
  int64_t width = 0, height = 0;  // of the PNG
  int64_t image_height = 0, image_width = 0, channels = 0, columns = 0, rows = 0;
  std::vector<int64_t> indices;  // the samples shown, in order
  std::string png, raw;          // the files written ("" raw: none)
};

// Writes the PNG (and the raw file) of cfg's train and eval transforms on `train`. Both are written
// as mokd writes its outputs (regular files only, a temporary file renamed over them). Throws
// naming the option for an empty --out, a count out of range or a --raw that is not a folder.
PreviewResult preview_data(const TrainConfig& cfg, const data::Dataset& train,
                           const PreviewOptions& opt);

}  // namespace mokd
