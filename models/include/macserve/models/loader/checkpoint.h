// Checkpoint: a model's config and weights, read from a Hugging Face directory (safetensors, single
// or sharded), a GGUF file, or made up (`--load-format dummy`). Weights are float32 host tensors
// under Hugging Face names ("model.layers.3.self_attn.q_proj.weight"), whatever the file stored:
// F32 safetensors tensors are zero-copy views of the memory map; F16/BF16 are converted and GGUF
// quantised types are dequantised at load, unless the caller keeps them quantized (keep_quantized:
// the CPU backend's `--cpu-weights native`, see checkpoint_from_gguf).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <unordered_map>

#include "macserve/core/model_config.h"
#include "macserve/core/tensor.h"
#include "macserve/core/vocab_data.h"

namespace macserve::models {

enum class LoadFormat { kAuto, kSafetensors, kGguf, kDummy };

LoadFormat parse_load_format(const std::string& name);  // "auto|safetensors|gguf|dummy"

struct Checkpoint {
  ModelConfig config;
  std::unordered_map<std::string, Tensor> weights;  // HF names -> host tensors (f32, or Q* blocks)
  std::string path;                                 // the directory or file it came from
  LoadFormat format = LoadFormat::kAuto;
  // GGUF files carry their tokenizer and chat template; HF directories keep them in files beside
  // the weights (tokenizer.json / tokenizer.model / tokenizer_config.json) that the tokenizer
  // module reads from `path`.
  std::optional<VocabData> gguf_vocab;
};

// Loads `path` (directory with config.json, or a .gguf file). For kDummy, `path` is a directory or
// file holding config.json; weights are random (seeded) with the right shapes.
// Throws Error(kInvalidModel / kNotFound / kUnsupported) naming the file and tensor.
Checkpoint load_checkpoint(const std::string& path, LoadFormat format = LoadFormat::kAuto,
                           uint64_t dummy_seed = 0, bool keep_quantized = false);

// The tensors (names and shapes) a config requires; loaders check against this list.
std::unordered_map<std::string, std::vector<int64_t>> expected_weight_shapes(const ModelConfig& c);

}  // namespace macserve::models
