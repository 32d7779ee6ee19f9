// Hugging Face safetensors: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data section.
// The header comes from an untrusted file, so parsing checks every size and offset against the
// file before anything is read; these functions are also what the fuzz target drives.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "macserve/core/tensor.h"

namespace macserve::models {

struct SafetensorsTensorInfo {
  std::string dtype;           // as written in the header: "F32", "BF16", "I64", ...
  std::vector<int64_t> shape;  // row-major, as torch has it
  uint64_t begin = 0;          // [begin, end): byte range relative to the data section
  uint64_t end = 0;
};

struct SafetensorsHeader {
  uint64_t data_offset = 0;  // where the data section starts in the file (8 + header length)
  std::unordered_map<std::string, SafetensorsTensorInfo> tensors;
};

// Throws Error(kInvalidModel) naming `source` (and the tensor) when anything is inconsistent with
// a file of file.size() bytes; kUnsupported for a dtype name that safetensors does not define.
SafetensorsHeader parse_safetensors_header(std::span<const uint8_t> file,
                                           const std::string& source);

// The tensor as float32 on the host. F32 data that is 4-byte aligned is a zero-copy view kept
// alive by `owner` (the file mapping); F16/BF16 (or unaligned F32) are converted into a new
// buffer. Other dtypes throw Error(kUnsupported) naming the tensor. `info` must come from
// parse_safetensors_header of the same `file`.
Tensor safetensors_tensor_to_f32(const std::string& name, const SafetensorsTensorInfo& info,
                                 const SafetensorsHeader& header, std::span<const uint8_t> file,
                                 const std::shared_ptr<void>& owner, const std::string& source);

}  // namespace macserve::models
