// load_checkpoint(): picks the format, runs its loader, and logs what was loaded. Also the tensor
// list every loader checks against (expected_weight_shapes) and the helpers they share.
#include "macserve/models/loader/checkpoint.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <sys/mman.h>

#include <nlohmann/json.hpp>

#include "loader_internal.h"
#include "macserve/core/error.h"
#include "macserve/core/logging.h"

namespace macserve::models {
namespace fs = std::filesystem;

std::unordered_map<std::string, std::vector<int64_t>> expected_weight_shapes(const ModelConfig& c) {
  std::unordered_map<std::string, std::vector<int64_t>> s;
  const int64_t h = c.hidden_size;
  s["model.embed_tokens.weight"] = {c.vocab_size, h};
  s["model.norm.weight"] = {h};
  if (!c.tie_word_embeddings) s["lm_head.weight"] = {c.vocab_size, h};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    s[p + "input_layernorm.weight"] = {h};
    s[p + "post_attention_layernorm.weight"] = {h};
    s[p + "self_attn.q_proj.weight"] = {c.q_size(), h};
    s[p + "self_attn.k_proj.weight"] = {c.kv_size(), h};
    s[p + "self_attn.v_proj.weight"] = {c.kv_size(), h};
    s[p + "self_attn.o_proj.weight"] = {h, c.q_size()};
    if (c.attention_bias) {
      s[p + "self_attn.q_proj.bias"] = {c.q_size()};
      s[p + "self_attn.k_proj.bias"] = {c.kv_size()};
      s[p + "self_attn.v_proj.bias"] = {c.kv_size()};
    }
    if (c.qk_norm) {
      s[p + "self_attn.q_norm.weight"] = {c.head_dim};
      s[p + "self_attn.k_norm.weight"] = {c.head_dim};
    }
    s[p + "mlp.gate_proj.weight"] = {c.intermediate_size, h};
    s[p + "mlp.up_proj.weight"] = {c.intermediate_size, h};
    s[p + "mlp.down_proj.weight"] = {h, c.intermediate_size};
  }
  return s;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> sorted_expected_shapes(
    const ModelConfig& config) {
  auto map = expected_weight_shapes(config);
  std::vector<std::pair<std::string, std::vector<int64_t>>> out(map.begin(), map.end());
  std::sort(out.begin(), out.end());
  return out;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void check_tensor_shape(const std::string& source, const std::string& name,
                        const std::vector<int64_t>& got, const std::vector<int64_t>& expected) {
  if (got != expected)
    throw_error(ErrorCode::kInvalidModel, "{}: tensor '{}' has shape {}, expected {}", source, name,
                shape_string(got), shape_string(expected));
}

void throw_missing_tensor(const std::string& source, const std::string& name) {
  throw_error(ErrorCode::kInvalidModel, "{}: missing tensor '{}'", source, name);
}

Tensor alloc_f32(const std::vector<int64_t>& shape) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    MACSERVE_CHECK(d >= 0, "negative dimension in {}", shape_string(shape));
    if (!checked_mul(n, static_cast<uint64_t>(d), &n) || n > (uint64_t{1} << 60))
      throw_error(ErrorCode::kResourceExhausted, "tensor of shape {} is too large",
                  shape_string(shape));
  }
  // Big tensors get 2 MiB-aligned memory marked for transparent huge pages: filling gigabytes one
  // 4 KiB page fault at a time spends more time in the kernel than in the conversion itself.
  constexpr std::size_t kHugePage = std::size_t{2} << 20;
  const bool is_big = n * sizeof(float) >= 4 * kHugePage;
  const std::size_t align = is_big ? kHugePage : 64;
  const std::size_t bytes =
      std::max<std::size_t>(align, (n * sizeof(float) + align - 1) / align * align);
  void* p = std::aligned_alloc(align, bytes);
  if (p == nullptr)
    throw_error(ErrorCode::kResourceExhausted, "out of host memory allocating {} ({} bytes)",
                shape_string(shape), bytes);
  if (is_big) ::madvise(p, bytes, MADV_HUGEPAGE);  // advisory: failure only costs speed
  std::shared_ptr<void> owner(p, [](void* q) { std::free(q); });
  return Tensor(p, DType::kF32, shape, Device::kCpu, std::move(owner));
}

ModelConfig read_hf_config(const std::string& path) {
  const fs::path file = fs::is_directory(path) ? fs::path(path) / "config.json" : fs::path(path);
  if (!fs::is_regular_file(file))
    throw_error(ErrorCode::kNotFound, "{}: config.json not found",
                fs::is_directory(path) ? path : file.string());
  std::ifstream in(file, std::ios::binary);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw_error(ErrorCode::kInvalidModel, "{}: not valid JSON", file.string());
  ModelConfig config = ModelConfig::from_hf_json(j, file.string());
  static constexpr std::array<const char*, 3> kSupported = {"LlamaForCausalLM", "Qwen2ForCausalLM",
                                                            "Qwen3ForCausalLM"};
  if (std::find(kSupported.begin(), kSupported.end(), config.architecture) == kSupported.end())
    throw_error(ErrorCode::kUnsupported,
                "{}: architecture '{}' is not supported (LlamaForCausalLM, Qwen2ForCausalLM, "
                "Qwen3ForCausalLM)",
                file.string(), config.architecture);
  return config;
}

namespace {

bool has_gguf_magic(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  char magic[4] = {};
  return in.read(magic, 4) && std::string_view(magic, 4) == "GGUF";
}

bool has_safetensors(const fs::path& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec))
    if (e.path().extension() == ".safetensors") return true;
  return fs::exists(dir / "model.safetensors.index.json");
}

LoadFormat detect_format(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec))
    throw_error(ErrorCode::kNotFound, "{}: no such file or directory", path);
  if (fs::is_directory(path)) {
    if (!fs::exists(fs::path(path) / "config.json"))
      throw_error(ErrorCode::kNotFound, "{}: config.json not found", path);
    if (!has_safetensors(path))
      throw_error(ErrorCode::kNotFound,
                  "{}: no weights found (model.safetensors, model.safetensors.index.json or "
                  "*.safetensors)",
                  path);
    return LoadFormat::kSafetensors;
  }
  if (fs::path(path).extension() == ".gguf" || has_gguf_magic(path)) return LoadFormat::kGguf;
  throw_error(
      ErrorCode::kInvalidModel,
      "{}: not a model (expected a directory with config.json and *.safetensors, or a .gguf file)",
      path);
}

const char* format_name(LoadFormat f) {
  switch (f) {
    case LoadFormat::kAuto:
      return "auto";
    case LoadFormat::kSafetensors:
      return "safetensors";
    case LoadFormat::kGguf:
      return "gguf";
    case LoadFormat::kDummy:
      return "dummy";
  }
  return "?";
}

}  // namespace

Checkpoint load_checkpoint(const std::string& path, LoadFormat format, uint64_t dummy_seed,
                           bool keep_quantized) {
  const auto start = std::chrono::steady_clock::now();
  if (format == LoadFormat::kAuto) format = detect_format(path);
  Checkpoint ckpt;
  switch (format) {
    case LoadFormat::kSafetensors:
      ckpt = load_safetensors_checkpoint(path);
      break;
    case LoadFormat::kGguf:
      ckpt = load_gguf_checkpoint(path, keep_quantized);
      break;
    case LoadFormat::kDummy:
      ckpt = load_dummy_checkpoint(path, dummy_seed);
      break;
    case LoadFormat::kAuto:
      MACSERVE_CHECK(false, "format detection returned auto for {}", path);
  }
  ckpt.path = path;
  ckpt.format = format;
  std::size_t bytes = 0;
  for (const auto& [name, t] : ckpt.weights) bytes += t.nbytes();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::size_t num_quantized = 0;
  for (const auto& [name, t] : ckpt.weights) num_quantized += is_quantized(t.dtype()) ? 1 : 0;
  spdlog::info("loaded {} ({}, {}): {} tensors ({} kept quantized), {:.1f} MiB, {:.2f} s", path,
               format_name(format), ckpt.config.architecture, ckpt.weights.size(), num_quantized,
               static_cast<double>(bytes) / (1 << 20), secs);
  return ckpt;
}

}  // namespace macserve::models
