// The Dataset interface's helpers and the in-memory split.
#include "io/dataset.h"

#include <cstring>

#include "engine/error.h"

namespace mokd::data {

void Dataset::read(int64_t index, uint8_t* hwc_out, int64_t* label) const {
  MOKD_CHECK(fixed_size(), location(), ": read() needs a split of fixed-size images");
  RawSample raw;
  fetch(index, &raw);
  MOKD_CHECK(
      !raw.encoded && raw.height == height() && raw.width == width() && raw.channels == channels(),
      source(index), ": not a decoded ", height(), "x", width(), "x", channels(), " image");
  std::memcpy(hwc_out, raw.bytes.data(), raw.bytes.size());
  if (label) *label = raw.label;
}

Sample Dataset::get(int64_t index) const {
  Sample s;
  s.pixels.resize(static_cast<size_t>(sample_bytes()));
  read(index, s.pixels.data(), &s.label);
  return s;
}

InMemoryDataset::InMemoryDataset(int64_t height, int64_t width, int64_t channels,
                                 std::vector<std::string> class_names, std::vector<uint8_t> pixels,
                                 std::vector<int64_t> labels, std::string location)
    : h_(height),
      w_(width),
      c_(channels),
      names_(std::move(class_names)),
      pixels_(std::move(pixels)),
      labels_(std::move(labels)),
      location_(std::move(location)) {
  MOKD_CHECK(h_ > 0 && w_ > 0 && c_ > 0, "InMemoryDataset: bad image size ", h_, "x", w_, "x", c_);
  MOKD_CHECK(pixels_.size() == labels_.size() * static_cast<size_t>(h_ * w_ * c_),
             "InMemoryDataset: ", pixels_.size(), " pixel bytes for ", labels_.size(),
             " images of ", h_, "x", w_, "x", c_);
  const int64_t nc = static_cast<int64_t>(names_.size());
  for (size_t i = 0; i < labels_.size(); ++i)
    MOKD_CHECK(labels_[i] >= 0 && labels_[i] < nc, "InMemoryDataset: label ", labels_[i],
               " of sample ", i, " outside [0, ", nc, ")");
}

void InMemoryDataset::fetch(int64_t index, RawSample* out) const {
  MOKD_CHECK(index >= 0 && index < size(), location_, ": index ", index, " outside [0, ", size(),
             ")");
  const size_t n = static_cast<size_t>(h_ * w_ * c_);
  const uint8_t* p = pixels_.data() + static_cast<size_t>(index) * n;
  out->bytes.assign(p, p + n);
  out->encoded = false;
  out->height = h_;
  out->width = w_;
  out->channels = c_;
  out->label = labels_[static_cast<size_t>(index)];
}

std::string InMemoryDataset::source(int64_t index) const {
  return location_ + "[" + std::to_string(index) + "]";
}

}  // namespace mokd::data
