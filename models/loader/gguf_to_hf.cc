// GGUF tensors -> Hugging Face weights: llama.cpp names to HF names, ggml dims (fastest first) to
// torch shapes (reversed), dequantisation to float32, and for general.architecture "llama" the
// inverse of the converter's q/k row permutation.
#include <cstring>
#include <utility>

#include "gguf_dequant.h"
#include "gguf_internal.h"
#include "loader_internal.h"
#include "macserve/core/error.h"
#include "mmap_file.h"
#include "parallel.h"

namespace macserve::models {
namespace {

// Per-layer tensors: llama.cpp "blk.N.<gguf>" <-> HF "model.layers.N.<hf>".
constexpr std::pair<const char*, const char*> kLayerNames[] = {
    {"attn_norm", "input_layernorm"},    {"attn_q", "self_attn.q_proj"},
    {"attn_k", "self_attn.k_proj"},      {"attn_v", "self_attn.v_proj"},
    {"attn_output", "self_attn.o_proj"}, {"attn_q_norm", "self_attn.q_norm"},
    {"attn_k_norm", "self_attn.k_norm"}, {"ffn_norm", "post_attention_layernorm"},
    {"ffn_gate", "mlp.gate_proj"},       {"ffn_up", "mlp.up_proj"},
    {"ffn_down", "mlp.down_proj"},
};
constexpr std::pair<const char*, const char*> kGlobalNames[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

// The llama.cpp name of a HF tensor name that expected_weight_shapes() produces.
std::string gguf_name_of(const std::string& hf) {
  for (const auto& [g, h] : kGlobalNames)
    if (hf == h) return g;
  const std::string prefix = "model.layers.";
  MACSERVE_CHECK(hf.rfind(prefix, 0) == 0, "unexpected tensor name {}", hf);
  const std::size_t dot = hf.find('.', prefix.size());
  const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
  const std::string rest = hf.substr(dot + 1);  // "self_attn.q_proj.weight"
  const std::size_t last = rest.rfind('.');
  const std::string module = rest.substr(0, last),
                    suffix = rest.substr(last);  // ".weight" / ".bias"
  for (const auto& [g, h] : kLayerNames)
    if (module == h) return std::string("blk.").append(layer).append(".").append(g).append(suffix);
  MACSERVE_CHECK(false, "no GGUF name for {}", hf);
}

// Heads whose rows the converter permuted, 0 when the tensor is stored as in HF.
int64_t permuted_heads(const std::string& hf, const std::string& arch, const ModelConfig& c) {
  if (arch != "llama") return 0;
  const auto ends_with = [&](const char* s) {
    const std::size_t n = std::strlen(s);
    return hf.size() >= n && hf.compare(hf.size() - n, n, s) == 0;
  };
  if (ends_with("self_attn.q_proj.weight") || ends_with("self_attn.q_proj.bias"))
    return c.num_q_heads;
  if (ends_with("self_attn.k_proj.weight") || ends_with("self_attn.k_proj.bias"))
    return c.num_kv_heads;
  return 0;
}

// llama.cpp's converter did w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2): the row at (h, j, i) in
// HF order sits at h*hd + 2i + j in the file, interleaving the two rotary halves of each head.
void unpermute_rows(const float* src, float* dst, int64_t rows, int64_t row_len,
                    int64_t num_heads) {
  const int64_t hd = rows / num_heads, half = hd / 2;
  for (int64_t h = 0; h < num_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const float* from = src + (h * hd + 2 * i + j) * row_len;
        std::memcpy(dst + (h * hd + j * half + i) * row_len, from,
                    static_cast<std::size_t>(row_len) * sizeof(float));
      }
}

struct Job {
  std::string hf_name;
  const GgufTensorInfo* info;
  std::vector<int64_t> shape;  // torch order
  int64_t num_heads;           // > 0: un-permute rows
  DType keep;                  // kF32: dequantize; kQ*: keep the blocks
};

// The DType that keeps a ggml type's blocks, kF32 for types that are dequantized.
DType kept_dtype(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kQ8_0:
      return DType::kQ8_0;
    case GgmlType::kQ4_0:
      return DType::kQ4_0;
    case GgmlType::kQ4_1:
      return DType::kQ4_1;
    case GgmlType::kF32:
    case GgmlType::kF16:
    case GgmlType::kBF16:
      return DType::kF32;
  }
  return DType::kF32;
}

// A quantized tensor kept as its blocks: a view of the file, or (q/k of llama files) a copy with
// whole rows moved back to HF order (rows are whole blocks, so the permutation moves bytes).
Tensor keep_blocks(const Job& job, const uint8_t* src, const std::shared_ptr<void>& owner) {
  const int64_t rows = job.shape[0];
  const std::size_t row_bytes = dtype_bytes(job.keep, job.shape[1]);
  if (job.num_heads == 0)
    return Tensor(const_cast<uint8_t*>(src), job.keep, job.shape, Device::kCpu, owner);
  MACSERVE_CHECK(rows % (2 * job.num_heads) == 0, "tensor '{}' rows {} heads {}", job.info->name,
                 rows, job.num_heads);
  Tensor out = Tensor::empty_host(job.keep, job.shape);
  auto* dst = out.data_as<uint8_t>();
  const int64_t hd = rows / job.num_heads, half = hd / 2;
  for (int64_t h = 0; h < job.num_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)
        std::memcpy(dst + static_cast<std::size_t>(h * hd + j * half + i) * row_bytes,
                    src + static_cast<std::size_t>(h * hd + 2 * i + j) * row_bytes, row_bytes);
  return out;
}

Tensor convert(const Job& job, const GgufFile& gguf, std::span<const uint8_t> file,
               const std::shared_ptr<void>& owner) {
  const uint8_t* src = file.data() + gguf.data_offset + job.info->offset;
  if (job.keep != DType::kF32) return keep_blocks(job, src, owner);
  const bool is_f32 = job.info->type == static_cast<uint32_t>(GgmlType::kF32);
  if (is_f32 && job.num_heads == 0 && reinterpret_cast<uintptr_t>(src) % alignof(float) == 0)
    return Tensor(const_cast<uint8_t*>(src), DType::kF32, job.shape, Device::kCpu, owner);
  Tensor t = alloc_f32(job.shape);
  const int64_t n = t.numel();
  dequantize_to_f32(job.info->type, src, n, t.data_as<float>());
  if (job.num_heads == 0) return t;
  const int64_t rows = job.shape[0];
  // The shape check against the config (heads x even head_dim) guarantees whole heads.
  MACSERVE_CHECK(rows % (2 * job.num_heads) == 0, "tensor '{}' rows {} heads {}", job.info->name,
                 rows, job.num_heads);
  Tensor out = alloc_f32(job.shape);
  unpermute_rows(t.data_as<float>(), out.data_as<float>(), rows, rows == 0 ? 0 : n / rows,
                 job.num_heads);
  return out;
}

std::vector<int64_t> torch_shape(const GgufTensorInfo& t) {
  return {t.dims.rbegin(), t.dims.rend()};
}

std::vector<Job> plan_jobs(const GgufFile& gguf, const ModelConfig& config, const std::string& arch,
                           const std::string& source, bool keep_quantized) {
  std::vector<Job> jobs;
  for (const auto& [hf, shape] : sorted_expected_shapes(config)) {
    const std::string name = gguf_name_of(hf);
    const GgufTensorInfo* info = gguf.find_tensor(name);
    if (info == nullptr)
      throw_error(ErrorCode::kInvalidModel, "{}: missing tensor '{}' ({})", source, name, hf);
    const std::vector<int64_t> got = torch_shape(*info);
    if (got != shape)
      throw_error(ErrorCode::kInvalidModel, "{}: tensor '{}' ({}) has shape {}, expected {}",
                  source, name, hf, shape_string(got), shape_string(shape));
    if (!is_dequantizable(info->type))
      throw_error(ErrorCode::kUnsupported,
                  "{}: tensor '{}' has type {}, which is not supported (F32, F16, BF16, "
                  "Q8_0, Q4_0, Q4_1)",
                  source, name, ggml_type_name(info->type));
    const DType keep = keep_quantized && shape.size() == 2 ? kept_dtype(info->type) : DType::kF32;
    jobs.push_back({hf, info, shape, permuted_heads(hf, arch, config), keep});
  }
  return jobs;
}

void read_rope_freqs(const GgufFile& gguf, std::span<const uint8_t> file, ModelConfig& config,
                     const std::string& source) {
  const GgufTensorInfo* t = gguf.find_tensor("rope_freqs.weight");
  if (t == nullptr) return;
  const int64_t n = t->dims[0];
  if (t->dims.size() != 1 || n != config.head_dim / 2 ||
      t->type != static_cast<uint32_t>(GgmlType::kF32))
    throw_error(ErrorCode::kInvalidModel, "{}: tensor 'rope_freqs.weight' must be f32 [{}]", source,
                config.head_dim / 2);
  std::vector<float> factors(static_cast<std::size_t>(n));
  std::memcpy(factors.data(), file.data() + gguf.data_offset + t->offset,
              factors.size() * sizeof(float));
  apply_rope_freqs(factors.data(), n, config, gguf, source);
}

}  // namespace

Checkpoint checkpoint_from_gguf(const GgufFile& gguf, std::span<const uint8_t> file,
                                const std::shared_ptr<void>& owner, const std::string& source,
                                bool keep_quantized) {
  Checkpoint ckpt;
  ckpt.config = gguf_model_config(gguf, source);
  read_rope_freqs(gguf, file, ckpt.config, source);
  const std::string arch = gguf.find("general.architecture")->str;
  const std::vector<Job> jobs = plan_jobs(gguf, ckpt.config, arch, source, keep_quantized);
  ckpt.gguf_vocab = gguf_vocab(gguf, source);
  std::vector<Tensor> tensors(jobs.size());
  parallel_for(static_cast<int64_t>(jobs.size()), [&](int64_t i) {
    const auto k = static_cast<std::size_t>(i);
    tensors[k] = convert(jobs[k], gguf, file, owner);
  });
  for (std::size_t k = 0; k < jobs.size(); ++k)
    ckpt.weights.emplace(jobs[k].hf_name, std::move(tensors[k]));
  return ckpt;
}

Checkpoint load_gguf_checkpoint(const std::string& path, bool keep_quantized) {
  auto file = MappedFile::open(path);
  const GgufFile gguf = parse_gguf(file->bytes(), path);
  return checkpoint_from_gguf(gguf, file->bytes(), file, path, keep_quantized);
}

}  // namespace macserve::models
