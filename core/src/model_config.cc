#include "macserve/core/model_config.h"

#include <nlohmann/json.hpp>

#include "macserve/core/error.h"

namespace macserve {
namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& source, const std::string& what) {
  throw_error(ErrorCode::kInvalidModel, "{}: {}", source, what);
}

// Reads an integer field, accepting it only when it is a whole number in range.
int64_t get_int(const json& j, const char* key, const std::string& source, bool required,
                int64_t fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) bad(source, fmt::format("missing field '{}'", key));
    return fallback;
  }
  if (!it->is_number_integer()) bad(source, fmt::format("field '{}' must be an integer", key));
  return it->get<int64_t>();
}

double get_num(const json& j, const char* key, const std::string& source, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) bad(source, fmt::format("field '{}' must be a number", key));
  return it->get<double>();
}

// eos_token_id may be an integer or a list of integers.
int64_t first_token_id(const json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return -1;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer())
    return (*it)[0].get<int64_t>();
  bad(source, fmt::format("field '{}' must be an integer or a list of integers", key));
}

void parse_rope(const json& j, ModelConfig& c, const std::string& source) {
  // Older configs: top-level rope_theta + rope_scaling. Newer: rope_parameters holds both.
  const json* params = nullptr;
  if (auto it = j.find("rope_parameters"); it != j.end() && it->is_object()) params = &*it;
  c.rope_theta = static_cast<float>(get_num(j, "rope_theta", source, 10000.0));
  if (params != nullptr)
    c.rope_theta = static_cast<float>(get_num(*params, "rope_theta", source, c.rope_theta));

  const json* scaling = nullptr;
  if (auto it = j.find("rope_scaling"); it != j.end() && it->is_object())
    scaling = &*it;
  else if (params != nullptr)
    scaling = params;
  if (scaling == nullptr) return;
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    if (auto it = scaling->find(key); it != scaling->end() && it->is_string()) {
      type = it->get<std::string>();
      break;
    }
  }
  if (type.empty() || type == "default") return;
  c.rope_factor = static_cast<float>(get_num(*scaling, "factor", source, 1.0));
  if (type == "llama3") {
    c.rope_scaling = RopeScaling::kLlama3;
    c.rope_low_freq_factor = static_cast<float>(get_num(*scaling, "low_freq_factor", source, 1.0));
    c.rope_high_freq_factor =
        static_cast<float>(get_num(*scaling, "high_freq_factor", source, 4.0));
    c.rope_original_max_position =
        get_int(*scaling, "original_max_position_embeddings", source, false, 8192);
  } else if (type == "linear") {
    c.rope_scaling = RopeScaling::kLinear;
  } else {
    throw_error(ErrorCode::kUnsupported, "{}: rope scaling type '{}' is not supported", source,
                type);
  }
}

}  // namespace

ModelConfig ModelConfig::from_hf_json(const json& j, const std::string& source) {
  if (!j.is_object()) bad(source, "config must be a JSON object");
  ModelConfig c;
  auto arch = j.find("architectures");
  if (arch == j.end() || !arch->is_array() || arch->empty() || !(*arch)[0].is_string())
    bad(source, "missing field 'architectures' (a list of strings)");
  c.architecture = (*arch)[0].get<std::string>();
  c.vocab_size = get_int(j, "vocab_size", source, true, 0);
  c.hidden_size = get_int(j, "hidden_size", source, true, 0);
  c.intermediate_size = get_int(j, "intermediate_size", source, true, 0);
  c.num_layers = get_int(j, "num_hidden_layers", source, true, 0);
  c.num_q_heads = get_int(j, "num_attention_heads", source, true, 0);
  c.num_kv_heads = get_int(j, "num_key_value_heads", source, false, c.num_q_heads);
  const int64_t default_head_dim = c.num_q_heads > 0 ? c.hidden_size / c.num_q_heads : 0;
  c.head_dim = get_int(j, "head_dim", source, false, default_head_dim);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", source, false, 2048);
  c.rms_norm_eps = static_cast<float>(get_num(j, "rms_norm_eps", source, 1e-6));
  parse_rope(j, c, source);
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && it->is_boolean())
    c.tie_word_embeddings = it->get<bool>();
  const bool is_qwen2 = c.architecture == "Qwen2ForCausalLM";
  c.attention_bias = is_qwen2;
  if (auto it = j.find("attention_bias"); it != j.end() && it->is_boolean() && !is_qwen2)
    c.attention_bias = it->get<bool>();
  c.qk_norm = c.architecture == "Qwen3ForCausalLM";
  c.bos_token_id = first_token_id(j, "bos_token_id", source);
  c.eos_token_id = first_token_id(j, "eos_token_id", source);
  for (const char* key : {"dtype", "torch_dtype"}) {
    if (auto it = j.find(key); it != j.end() && it->is_string()) {
      c.torch_dtype = it->get<std::string>();
      break;
    }
  }
  c.validate(source);
  return c;
}

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int64_t v, const char* name, int64_t limit) {
    if (v <= 0 || v > limit)
      bad(source, fmt::format("'{}' = {} is out of range (1..{})", name, v, limit));
  };
  positive(vocab_size, "vocab_size", int64_t{1} << 24);
  positive(hidden_size, "hidden_size", 1 << 16);
  positive(intermediate_size, "intermediate_size", 1 << 18);
  positive(num_layers, "num_hidden_layers", 1024);
  positive(num_q_heads, "num_attention_heads", 1024);
  positive(num_kv_heads, "num_key_value_heads", 1024);
  positive(head_dim, "head_dim", 1024);
  positive(max_position_embeddings, "max_position_embeddings", int64_t{1} << 24);
  if (num_q_heads % num_kv_heads != 0)
    bad(source, fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}",
                            num_q_heads, num_kv_heads));
  if (head_dim % 2 != 0) bad(source, fmt::format("head_dim {} must be even for RoPE", head_dim));
  if (!(rms_norm_eps > 0.0f)) bad(source, "rms_norm_eps must be positive");
  if (!(rope_theta > 0.0f)) bad(source, "rope_theta must be positive");
}

}  // namespace macserve
