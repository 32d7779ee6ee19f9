// The GGUF metadata readers behind checkpoint_from_gguf(): llama.cpp's {arch}.* hyper-parameters
// to a ModelConfig, and tokenizer.ggml.* to a VocabData.
#pragma once

#include <optional>
#include <span>
#include <string>

#include "macserve/core/model_config.h"
#include "macserve/core/vocab_data.h"
#include "macserve/models/loader/gguf.h"

namespace macserve::models {

// Throws Error(kUnsupported) for architectures other than llama/qwen2/qwen3 and
// Error(kInvalidModel) naming the key for missing or mistyped fields. Does not look at tensors
// except to decide tied embeddings (output.weight absent) and llama q/k biases.
ModelConfig gguf_model_config(const GgufFile& gguf, const std::string& source);

// llama.cpp stores Llama 3.1-style RoPE scaling as a tensor of per-frequency factors
// (rope_freqs.weight, [head_dim / 2] f32) instead of metadata; recovers the llama3 parameters from
// it. Throws Error(kUnsupported) when the factors do not follow the llama3 formula.
void apply_rope_freqs(const float* factors, int64_t n, ModelConfig& config, const GgufFile& gguf,
                      const std::string& source);

// std::nullopt when the file carries no tokenizer (no tokenizer.ggml.tokens).
std::optional<VocabData> gguf_vocab(const GgufFile& gguf, const std::string& source);

}  // namespace macserve::models
