// Element types and devices: what a tensor's bytes mean and where they live. The DType enum
// itself is declared in engine/kernel_types.h, which device code includes.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "engine/kernel_types.h"  // DType

namespace mokd {

size_t dtype_size(DType t);
const char* dtype_name(DType t);
inline bool is_floating(DType t) { return t == DType::F32 || t == DType::BF16 || t == DType::F64; }

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i = 0) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const = default;
  std::string str() const;  // "cpu", "cuda:0"
};

// Parses "cpu", "cuda", "cuda:N"; throws mokd::Error naming the text otherwise.
Device parse_device(const std::string& s);

}  // namespace mokd
