// GGUF metadata -> ModelConfig. llama.cpp writes the hyper-parameters under the architecture's
// prefix ("llama.block_count", "qwen2.attention.head_count_kv", ...).
#include <cmath>
#include <numbers>
#include <vector>

#include "gguf_internal.h"
#include "macserve/core/error.h"

namespace macserve::models {
namespace {

struct ArchInfo {
  const char* gguf_name;
  const char* hf_name;
};
constexpr ArchInfo kArchitectures[] = {
    {"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}};

class MetadataReader {
 public:
  MetadataReader(const GgufFile& gguf, std::string prefix, const std::string& source)
      : gguf_(gguf), prefix_(std::move(prefix)), source_(source) {}

  std::optional<int64_t> find_int(const std::string& key) const {
    const GgufValue* v = gguf_.find(prefix_ + key);
    if (v == nullptr) return std::nullopt;
    auto x = v->as_int();
    if (!x)
      throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}{}' must be an integer", source_,
                  prefix_, key);
    return x;
  }
  int64_t get_int(const std::string& key) const {
    auto x = find_int(key);
    if (!x)
      throw_error(ErrorCode::kInvalidModel, "{}: missing metadata '{}{}'", source_, prefix_, key);
    return *x;
  }
  std::optional<double> find_number(const std::string& key) const {
    const GgufValue* v = gguf_.find(prefix_ + key);
    if (v == nullptr) return std::nullopt;
    auto x = v->as_number();
    if (!x)
      throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}{}' must be a number", source_,
                  prefix_, key);
    return x;
  }
  std::optional<std::string> find_string(const std::string& key) const {
    const GgufValue* v = gguf_.find(prefix_ + key);
    if (v == nullptr) return std::nullopt;
    if (v->type != GgufValueType::kString)
      throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}{}' must be a string", source_,
                  prefix_, key);
    return v->str;
  }

 private:
  const GgufFile& gguf_;
  std::string prefix_;
  const std::string& source_;
};

std::string architecture_of(const GgufFile& gguf, const std::string& source) {
  const GgufValue* arch = gguf.find("general.architecture");
  if (arch == nullptr || arch->type != GgufValueType::kString)
    throw_error(ErrorCode::kInvalidModel, "{}: missing metadata 'general.architecture'", source);
  return arch->str;
}

void read_rope_scaling(const MetadataReader& m, ModelConfig& c, const std::string& source) {
  const std::string type = m.find_string("rope.scaling.type").value_or("none");
  if (type == "none") return;
  if (type != "linear")
    throw_error(ErrorCode::kUnsupported, "{}: rope scaling type '{}' is not supported", source,
                type);
  c.rope_scaling = RopeScaling::kLinear;
  c.rope_factor = static_cast<float>(m.find_number("rope.scaling.factor").value_or(1.0));
}

int64_t vocab_size_of(const GgufFile& gguf, const MetadataReader& m) {
  if (auto v = m.find_int("vocab_size")) return *v;
  if (const GgufValue* tokens = gguf.find("tokenizer.ggml.tokens");
      tokens != nullptr && !tokens->items.empty())
    return static_cast<int64_t>(tokens->items.size());
  if (const GgufTensorInfo* embd = gguf.find_tensor("token_embd.weight");
      embd != nullptr && embd->dims.size() == 2)
    return embd->dims[1];
  return 0;  // validate() reports it
}

}  // namespace

ModelConfig gguf_model_config(const GgufFile& gguf, const std::string& source) {
  const std::string arch = architecture_of(gguf, source);
  ModelConfig c;
  for (const ArchInfo& a : kArchitectures)
    if (arch == a.gguf_name) c.architecture = a.hf_name;
  if (c.architecture.empty())
    throw_error(ErrorCode::kUnsupported,
                "architecture '{}' in file {} is not supported (llama, qwen2, qwen3)", arch,
                source);
  const MetadataReader m(gguf, arch + ".", source);
  c.num_layers = m.get_int("block_count");
  c.hidden_size = m.get_int("embedding_length");
  c.intermediate_size = m.get_int("feed_forward_length");
  c.num_q_heads = m.get_int("attention.head_count");
  c.num_kv_heads = m.find_int("attention.head_count_kv").value_or(c.num_q_heads);
  c.head_dim = m.find_int("attention.key_length")
                   .value_or(c.num_q_heads > 0 ? c.hidden_size / c.num_q_heads : 0);
  c.max_position_embeddings = m.find_int("context_length").value_or(c.max_position_embeddings);
  c.rope_theta = static_cast<float>(m.find_number("rope.freq_base").value_or(c.rope_theta));
  c.rms_norm_eps = static_cast<float>(
      m.find_number("attention.layer_norm_rms_epsilon").value_or(c.rms_norm_eps));
  read_rope_scaling(m, c, source);
  c.vocab_size = vocab_size_of(gguf, m);
  c.tie_word_embeddings = gguf.find_tensor("output.weight") == nullptr;
  c.attention_bias = arch == "qwen2" || gguf.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = arch == "qwen3";
  const MetadataReader tok(gguf, "tokenizer.ggml.", source);
  c.bos_token_id = tok.find_int("bos_token_id").value_or(-1);
  c.eos_token_id = tok.find_int("eos_token_id").value_or(-1);
  c.validate(source);
  return c;
}

void apply_rope_freqs(const float* factors, int64_t n, ModelConfig& config, const GgufFile& gguf,
                      const std::string& source) {
  bool all_one = true;
  for (int64_t i = 0; i < n; ++i) all_one = all_one && factors[i] == 1.0f;
  if (all_one) return;
  // The llama3 formula (as the converter evaluated it): factor 1 for wavelengths shorter than
  // original / high_freq_factor, `factor` for those longer than original / low_freq_factor, and a
  // smooth blend between. The metadata keeps none of low/high/original, so try Meta's values
  // (1, 4, 8192; original from metadata when present) and accept them only if they reproduce the
  // tensor.
  const MetadataReader m(gguf, architecture_of(gguf, source) + ".", source);
  const double factor = factors[n - 1];
  if (!(factor >= 1.0 && std::isfinite(factor)))
    throw_error(ErrorCode::kUnsupported, "{}: tensor 'rope_freqs.weight' has scaling factor {}",
                source, factor);
  const double low = 1.0, high = 4.0;
  const double original =
      static_cast<double>(m.find_int("rope.scaling.original_context_length").value_or(8192));
  const double dim = 2.0 * static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) {
    const double freq =
        1.0 / std::pow(static_cast<double>(config.rope_theta), 2.0 * static_cast<double>(i) / dim);
    const double wavelen = 2.0 * std::numbers::pi / freq;
    double expected = factor;
    if (wavelen < original / high) {
      expected = 1.0;
    } else if (wavelen <= original / low) {
      const double smooth = (original / wavelen - low) / (high - low);
      expected = 1.0 / ((1.0 - smooth) / factor + smooth);
    }
    if (!(std::abs(expected - factors[i]) <= 1e-3 * expected))  // NaN fails too
      throw_error(ErrorCode::kUnsupported,
                  "{}: tensor 'rope_freqs.weight' does not follow llama3 rope scaling "
                  "(factor {} at {} , expected {})",
                  source, factors[i], i, expected);
  }
  config.rope_scaling = RopeScaling::kLlama3;
  config.rope_factor = static_cast<float>(factor);
  config.rope_low_freq_factor = static_cast<float>(low);
  config.rope_high_freq_factor = static_cast<float>(high);
  config.rope_original_max_position = static_cast<int64_t>(original);
}

}  // namespace macserve::models
