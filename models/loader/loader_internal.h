// Pieces shared by the loaders (safetensors, GGUF, dummy) and load_checkpoint(): the per-format
// entry points, checked arithmetic for sizes read from untrusted files, and the checks every
// loader applies to the tensors a config requires.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "macserve/core/model_config.h"
#include "macserve/core/tensor.h"
#include "macserve/models/loader/checkpoint.h"

namespace macserve::models {

// ---- per-format entry points --------------------------------------------------------------
Checkpoint load_safetensors_checkpoint(const std::string& dir);  // config.json + *.safetensors
Checkpoint load_gguf_checkpoint(const std::string& file, bool keep_quantized);
Checkpoint load_dummy_checkpoint(const std::string& path, uint64_t seed);
// `path` is a directory holding config.json or the config.json file itself.
ModelConfig read_hf_config(const std::string& path);

// ---- checked arithmetic: sizes in model files are untrusted --------------------------------
inline bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}
inline bool checked_add(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_add_overflow(a, b, out);
}

// ---- tensors --------------------------------------------------------------------------------
// Uninitialised 64-byte aligned float32 host tensor: every loader overwrites all of it, so the
// zero fill of Tensor::empty_host would be a wasted pass over (for dummy 8B) 32 GB.
Tensor alloc_f32(const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);

// The required tensors of `config` sorted by name, so that errors come out in a stable order.
std::vector<std::pair<std::string, std::vector<int64_t>>> sorted_expected_shapes(
    const ModelConfig& config);

// Throws Error(kInvalidModel) "<source>: tensor '<name>' has shape [..], expected [..]".
void check_tensor_shape(const std::string& source, const std::string& name,
                        const std::vector<int64_t>& got, const std::vector<int64_t>& expected);
[[noreturn]] void throw_missing_tensor(const std::string& source, const std::string& name);

}  // namespace macserve::models
