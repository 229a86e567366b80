// safetensors: the weight format mokd reads and writes
// (https://github.com/huggingface/safetensors). Layout: 8-byte little-endian header length N, N
// bytes of JSON header
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..}},
// then the data buffer; offsets are relative to the buffer start.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace mokd::io {

struct LoadOptions {
  // Floating tensors (F32, BF16, F16, F64) are converted to this dtype; integer tensors keep
  // theirs.
  DType float_dtype = DType::F32;
  // NaN/Inf in a floating tensor is an error naming the file and tensor unless allowed.
  bool allow_non_finite = false;
  Device device = Device::cpu();
};

using TensorMap = std::map<std::string, Tensor>;
using Metadata = std::map<std::string, std::string>;

// Reads every tensor of a file (memory-mapped). Throws mokd::Error naming the file and the
// tensor for any malformed header, bad offsets, size mismatches, unknown dtypes or duplicates.
TensorMap load_safetensors(const std::string& path, const LoadOptions& opts = {},
                           Metadata* metadata = nullptr);

// Writes tensors (f32, bf16, f64, i32, i64; any device) atomically: a temporary file in the same
// folder, then rename. Tensors are laid out in name order; the header is padded to 8 bytes.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const Metadata& metadata = {});

// A uint8 array for the file's U8 dtype (images as the data pipeline produces them). mokd has no
// uint8 tensor type and its reader refuses U8, so such files are for other readers (numpy,
// PyTorch's safetensors); data holds the product of shape's sides, row-major.
struct U8Array {
  Shape shape;
  std::vector<uint8_t> data;
};
using U8Map = std::map<std::string, U8Array>;
// save_safetensors with U8 arrays too, laid out with the tensors in one name order. A name in
// both maps, or an array whose data is not its shape's size, is an error before anything is
// written.
void save_safetensors(const std::string& path, const TensorMap& tensors, const U8Map& u8,
                      const Metadata& metadata = {});

// One header entry as stored in the file (no data read).
struct TensorEntry {
  std::string dtype;  // the file's dtype name: "F32", "BF16", "F16", "F64", "I32", "I64"
  Shape shape;
  uint64_t begin = 0, end = 0;  // byte range within the data buffer
};

// Validates the whole header (every check of load_safetensors except the values themselves) and
// returns its entries by name, reading only the header pages. For strict state_dict checks.
std::map<std::string, TensorEntry> inspect_safetensors(const std::string& path,
                                                       Metadata* metadata = nullptr);

// load_safetensors on a whole file's bytes already in memory; `source` names them in errors.
TensorMap load_safetensors_bytes(const void* data, size_t size, const std::string& source,
                                 const LoadOptions& opts = {}, Metadata* metadata = nullptr);

}  // namespace mokd::io
