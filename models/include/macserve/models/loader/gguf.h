// GGUF (versions 2 and 3), the llama.cpp file format: header, typed metadata key/values, tensor
// infos, then an aligned data section. Parsing works on bytes in memory (a file mapping, or a
// fuzz input) and checks every count, length and offset against the buffer before using it.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "macserve/models/loader/checkpoint.h"

namespace macserve::models {

// ---- metadata values --------------------------------------------------------------------------
enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

struct GgufValue {
  GgufValueType type = GgufValueType::kU8;
  // Scalars: exactly one of these holds the value, by type (bool and unsigned in `u`).
  uint64_t u = 0;
  int64_t i = 0;
  double f = 0.0;
  std::string str;
  GgufValueType elem_type = GgufValueType::kU8;  // arrays
  std::vector<GgufValue> items;                  // arrays

  bool is_integer() const;
  // The integer value when this is an integer type and fits in int64.
  std::optional<int64_t> as_int() const;
  // Integers and floats as double.
  std::optional<double> as_number() const;
};

// ---- tensors ------------------------------------------------------------------------------------
// ggml_type ids as stored in the file (only some are supported for loading).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kBF16 = 30,
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ne[0..n): ne[0] is the fastest-varying (row length)
  uint32_t type = 0;          // ggml_type id
  uint64_t offset = 0;        // relative to the data section
  uint64_t nbytes = 0;        // validated: data_offset + offset + nbytes <= file size
};

struct GgufFile {
  uint32_t version = 0;
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;  // in file order
  uint64_t alignment = 32;              // general.alignment
  uint64_t data_offset = 0;             // start of the data section in the file

  const GgufValue* find(const std::string& key) const;
  const GgufTensorInfo* find_tensor(const std::string& name) const;
};

// Throws Error(kInvalidModel) naming `source` (and the key or tensor) for anything malformed,
// Error(kUnsupported) for GGUF v1, big-endian files and ggml types this build does not know.
GgufFile parse_gguf(std::span<const uint8_t> file, const std::string& source);

// The tokenizer vocabulary a .gguf file carries (tokenizer.ggml.*), without touching its weights;
// std::nullopt when it has none. Throws like parse_gguf, Error(kNotFound) for a missing file.
std::optional<VocabData> read_gguf_vocab(const std::string& path);

// Name of a ggml type id for messages ("Q4_K", or "type 99").
std::string ggml_type_name(uint32_t type);

// The whole checkpoint from a parsed GGUF: config from metadata, weights dequantised to float32
// under Hugging Face names (llama q/k rows un-permuted), and the tokenizer vocabulary. `owner`
// keeps `file` alive for zero-copy F32 views. With keep_quantized, 2-D Q8_0/Q4_0/Q4_1 tensors (the
// linear layers and the embedding) stay in their blocks (DType::kQ8_0/kQ4_0/kQ4_1), zero-copy views
// of `file` unless their rows need un-permuting.
Checkpoint checkpoint_from_gguf(const GgufFile& gguf, std::span<const uint8_t> file,
                                const std::shared_ptr<void>& owner, const std::string& source,
                                bool keep_quantized = false);

}  // namespace macserve::models
