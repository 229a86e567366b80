// The Dataset interface's helpers and the in-memory split.
#include "io/dataset.h"

#include <cstring>

#include "engine/error.h"

namespace mokd::data {

Sample Dataset::get(int64_t index) const {
  Sample s;
  s.pixels.resize(static_cast<size_t>(sample_bytes()));
  read(index, s.pixels.data(), &s.label);
  return s;
}

InMemoryDataset::InMemoryDataset(int64_t height, int64_t width, int64_t channels,
                                 std::vector<std::string> class_names, std::vector<uint8_t> pixels,
                                 std::vector<int64_t> labels)
    : h_(height),
      w_(width),
      c_(channels),
      names_(std::move(class_names)),
      pixels_(std::move(pixels)),
      labels_(std::move(labels)) {
  MOKD_CHECK(h_ > 0 && w_ > 0 && c_ > 0, "InMemoryDataset: bad image size ", h_, "x", w_, "x", c_);
  MOKD_CHECK(pixels_.size() == labels_.size() * static_cast<size_t>(h_ * w_ * c_),
             "InMemoryDataset: ", pixels_.size(), " pixel bytes for ", labels_.size(),
             " images of ", h_, "x", w_, "x", c_);
  const int64_t nc = static_cast<int64_t>(names_.size());
  for (size_t i = 0; i < labels_.size(); ++i)
    MOKD_CHECK(labels_[i] >= 0 && labels_[i] < nc, "InMemoryDataset: label ", labels_[i],
               " of sample ", i, " outside [0, ", nc, ")");
}

void InMemoryDataset::read(int64_t index, uint8_t* hwc_out, int64_t* label) const {
  MOKD_CHECK(index >= 0 && index < size(), "dataset: index ", index, " outside [0, ", size(), ")");
  const size_t n = static_cast<size_t>(h_ * w_ * c_);
  std::memcpy(hwc_out, pixels_.data() + static_cast<size_t>(index) * n, n);
  if (label) *label = labels_[static_cast<size_t>(index)];
}

}  // namespace mokd::data
