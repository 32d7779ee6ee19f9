// ModelConfig: the architecture hyper-parameters of a decoder-only Llama/Qwen model, filled from a
// Hugging Face config.json (both the old top-level rope_theta/torch_dtype form and the newer
// rope_parameters/dtype form) or from GGUF metadata.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace macserve {

enum class RopeScaling { kNone, kLlama3, kLinear };

struct ModelConfig {
  std::string architecture;  // "LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_q_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling = RopeScaling::kNone;
  float rope_factor = 1.0f;                   // llama3 and linear
  float rope_low_freq_factor = 1.0f;          // llama3
  float rope_high_freq_factor = 4.0f;         // llama3
  int64_t rope_original_max_position = 8192;  // llama3
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v biases (Qwen2)
  bool qk_norm = false;         // per-head RMSNorm of q and k before RoPE (Qwen3)
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;  // the first one when config lists several
  std::string torch_dtype = "float32";

  // Throws Error(kInvalidModel) naming `source` and the field when something is missing or wrong.
  static ModelConfig from_hf_json(const nlohmann::json& j, const std::string& source);
  void validate(const std::string& source) const;
  int64_t q_size() const { return num_q_heads * head_dim; }
  int64_t kv_size() const { return num_kv_heads * head_dim; }
};

}  // namespace macserve
