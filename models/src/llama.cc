// The Llama-family decoder: Llama 2/3/3.1, Qwen2 (q/k/v biases) and Qwen3 (per-head q/k RMSNorm,
// head_dim from config) differ only in the flags of ModelConfig. run_layers() reads top to bottom
// like the architecture: embed -> N x (norm, attention, norm, SwiGLU MLP) -> norm -> logits. The
// step's upload, workspace, MAC telemetry and CUDA graphs are the StepExecutor's (Model::forward).
#include "macserve/models/llama.h"

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "macserve/backend/step_executor.h"
#include "macserve/core/error.h"
#include "macserve/kernels/quant.h"

namespace macserve::models {
namespace {

// Moves a checkpoint tensor out (host float32), releasing the checkpoint's reference.
Tensor take_host(Checkpoint& ckpt, const std::string& name) {
  auto it = ckpt.weights.find(name);
  if (it == ckpt.weights.end())
    throw_error(ErrorCode::kInvalidModel, "{}: missing tensor '{}'", ckpt.path, name);
  Tensor t = std::move(it->second);
  ckpt.weights.erase(it);  // release host memory as we go
  return t;
}

Tensor take(Checkpoint& ckpt, const std::string& name, backend::Backend& be) {
  return be.upload_weight(take_host(ckpt, name));
}

// A weight kept in GGUF blocks as host float32 (rows in order); any other tensor as it is.
Tensor to_f32(const Tensor& t) {
  if (!is_quantized(t.dtype())) return t;
  const kernels::QuantFormat f = t.dtype() == DType::kQ8_0   ? kernels::QuantFormat::kQ8_0
                                 : t.dtype() == DType::kQ4_0 ? kernels::QuantFormat::kQ4_0
                                                             : kernels::QuantFormat::kQ4_1;
  Tensor out = Tensor::empty_host(DType::kF32, t.shape());
  std::vector<int32_t> rows(static_cast<std::size_t>(t.dim(0)));
  for (std::size_t r = 0; r < rows.size(); ++r) rows[r] = static_cast<int32_t>(r);
  kernels::cpu::dequantize_rows(f, t.data_as<uint8_t>(), t.dim(1), rows.data(), t.dim(0),
                                out.data_as<float>());
  return out;
}

kernels::RopeScalingType to_kernel(RopeScaling s) {
  switch (s) {
    case RopeScaling::kNone:
      return kernels::RopeScalingType::kNone;
    case RopeScaling::kLlama3:
      return kernels::RopeScalingType::kLlama3;
    case RopeScaling::kLinear:
      return kernels::RopeScalingType::kLinear;
  }
  return kernels::RopeScalingType::kNone;
}

}  // namespace

LlamaModel::LlamaModel(Checkpoint ckpt, backend::Backend& be)
    : Model(be, ckpt.config), config_(ckpt.config), be_(be) {
  const ModelConfig& c = config_;
  embed_ = take(ckpt, "model.embed_tokens.weight", be);
  layers_.resize(static_cast<std::size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer& L = layers_[static_cast<std::size_t>(i)];
    L.input_norm = take(ckpt, p + "input_layernorm.weight", be);
    L.post_attn_norm = take(ckpt, p + "post_attention_layernorm.weight", be);
    const std::string attn = p + "self_attn.";
    L.w_qkv =
        fuse_rows({take_host(ckpt, attn + "q_proj.weight"), take_host(ckpt, attn + "k_proj.weight"),
                   take_host(ckpt, attn + "v_proj.weight")});
    if (c.attention_bias)
      L.b_qkv =
          fuse_rows({take_host(ckpt, attn + "q_proj.bias"), take_host(ckpt, attn + "k_proj.bias"),
                     take_host(ckpt, attn + "v_proj.bias")});
    L.wo = take(ckpt, attn + "o_proj.weight", be);
    if (c.qk_norm) {
      L.q_norm = take(ckpt, attn + "q_norm.weight", be);
      L.k_norm = take(ckpt, attn + "k_norm.weight", be);
    }
    L.w_gate_up = fuse_rows(
        {take_host(ckpt, p + "mlp.gate_proj.weight"), take_host(ckpt, p + "mlp.up_proj.weight")});
    L.w_down = take(ckpt, p + "mlp.down_proj.weight", be);
  }
  final_norm_ = take(ckpt, "model.norm.weight", be);
  lm_head_ = c.tie_word_embeddings ? embed_ : take(ckpt, "lm_head.weight", be);

  kernels::RopeFreqParams rp{c.head_dim,
                             c.rope_theta,
                             to_kernel(c.rope_scaling),
                             c.rope_factor,
                             c.rope_low_freq_factor,
                             c.rope_high_freq_factor,
                             c.rope_original_max_position};
  inv_freq_ = backend::upload_rope_inv_freq(be, rp);
  declare_buffers();
}

// The activations of one step; the residual stream, projections' outputs and logits in f32, the
// inputs of linear layers in the backend's activation dtype (f32 on CPU, bf16 on CUDA).
void LlamaModel::declare_buffers() {
  const ModelConfig& c = config_;
  const DType act = be_.activation_dtype();
  using Rows = backend::StepExecutor::Rows;
  const int64_t Hq = c.num_q_heads, Hkv = c.num_kv_heads, D = c.head_dim;
  buf_.residual = add_buffer(Rows::kTokens, DType::kF32, {c.hidden_size});
  buf_.normed = add_buffer(Rows::kTokens, act, {c.hidden_size});
  buf_.qkv = add_buffer(Rows::kTokens, DType::kF32, {(Hq + 2 * Hkv) * D});
  buf_.q = add_buffer(Rows::kTokens, DType::kF32, {Hq, D});
  buf_.attn = add_buffer(Rows::kTokens, act, {Hq, D});
  buf_.proj = add_buffer(Rows::kTokens, DType::kF32, {c.hidden_size});
  buf_.gate_up = add_buffer(Rows::kTokens, DType::kF32, {2 * c.intermediate_size});
  buf_.act = add_buffer(Rows::kTokens, act, {c.intermediate_size});
  buf_.q_pre = add_buffer(Rows::kTokens, DType::kF32, {Hq, D});
  buf_.audit = add_buffer(Rows::kTokens, DType::kF32, {Hq, D});
  buf_.last_hidden = add_buffer(Rows::kLogits, act, {c.hidden_size});
  buf_.logits = add_buffer(Rows::kLogits, DType::kF32, {c.vocab_size});
}

// Stacks the rows of host tensors ([n_i, hidden] weights or [n_i] biases) into one
// [sum n_i, ...] tensor, so that one GEMM computes them side by side (gate | up, q | k | v). Fused
// on the host (float32, or the tensors' blocks when all are kept in the same quantized format: the
// CPU's quantized GEMM is bit-identical to the f32 one over the dequantized rows), then uploaded in
// the backend's weight dtype.
Tensor LlamaModel::fuse_rows(const std::vector<Tensor>& parts_in) {
  bool same = true;
  for (const Tensor& t : parts_in) {
    same = same && t.dtype() == parts_in[0].dtype();
    MACSERVE_CHECK(t.rank() == parts_in[0].rank() &&
                       t.numel() / t.dim(0) == parts_in[0].numel() / parts_in[0].dim(0),
                   "fuse_rows: {} does not stack onto {}", t.shape_string(),
                   parts_in[0].shape_string());
  }
  std::vector<Tensor> parts;
  std::vector<int64_t> shape = parts_in[0].shape();
  shape[0] = 0;
  for (const Tensor& t : parts_in) {
    parts.push_back(same ? t : to_f32(t));
    shape[0] += t.dim(0);
  }
  Tensor host = Tensor::empty_host(parts[0].dtype(), shape);
  std::size_t offset = 0;
  for (const Tensor& t : parts) {
    std::memcpy(host.data_as<uint8_t>() + offset, t.data(), t.nbytes());
    offset += t.nbytes();
  }
  return be_.upload_weight(host);
}

int64_t LlamaModel::weight_bytes() const {
  int64_t total = embed_.nbytes() + final_norm_.nbytes();
  if (!config_.tie_word_embeddings) total += lm_head_.nbytes();
  for (const Layer& L : layers_) {
    for (const Tensor* t : {&L.input_norm, &L.post_attn_norm, &L.w_qkv, &L.b_qkv, &L.wo, &L.q_norm,
                            &L.k_norm, &L.w_gate_up, &L.w_down})
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
  }
  return total;
}

void LlamaModel::attention(int64_t layer, const backend::DeviceStep& step, const KvCacheView& kv,
                           const Tensor& q, const Tensor& attn) {
  const auto l = static_cast<std::size_t>(layer);
  const float scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
  if (!step.mac) {
    be_.paged_attention(q, kv.k[l], kv.v[l], attn, step.meta, kv.layout, scale);
    return;
  }
  // MAC: decisions and KV telemetry go to this layer's part of the step's telemetry buffer; an
  // audited step also runs exact attention into the audit buffer and sums the error there.
  const backend::Backend::MacArgs args =
      step.mac_args(layer, kv.mac_rings.at(l), step.buffer(buf_.audit));
  be_.mac_attention(q, step.buffer(buf_.q_pre), kv.k[l], kv.v[l], attn, step.meta, kv.layout, scale,
                    args);
}

Tensor LlamaModel::run_layers(const backend::DeviceStep& step, const KvCacheView& kv) {
  const ModelConfig& c = config_;
  const int64_t T = step.num_tokens;
  const Tensor &residual = step.buffer(buf_.residual), &h = step.buffer(buf_.normed);
  const Tensor &qkv = step.buffer(buf_.qkv), &q = step.buffer(buf_.q);
  const Tensor &attn = step.buffer(buf_.attn), &proj = step.buffer(buf_.proj);
  const Tensor &gate_up = step.buffer(buf_.gate_up), &act = step.buffer(buf_.act);

  // Token embeddings start the residual stream.
  be_.embedding(step.token_ids, embed_, residual);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const Layer& L = layers_[static_cast<std::size_t>(i)];
    // Pre-attention RMSNorm; from layer 1 on it first adds the previous MLP output to the residual.
    if (i == 0)
      be_.rms_norm(residual, nullptr, L.input_norm, h, c.rms_norm_eps);
    else
      be_.rms_norm(proj, &residual, L.input_norm, h, c.rms_norm_eps);
    // Q, K and V projections in one GEMM (+ biases for Qwen2): rows [q | k | v].
    be_.linear(h, L.w_qkv, c.attention_bias ? &L.b_qkv : nullptr, qkv);
    // Out of the fused rows (one kernel on CUDA): Qwen3's RMSNorm over each head of q and k, the
    // rotary position embedding, this step's K/V into the paged cache and the rotated q for
    // attention; MAC matches the query before RoPE (after q_norm for Qwen3), so it keeps a copy.
    const backend::Backend::QkNorm qk_norm{&L.q_norm, &L.k_norm, c.rms_norm_eps};
    be_.rope_kv_write(qkv, q, step.mac ? &step.buffer(buf_.q_pre) : nullptr,
                      c.qk_norm ? &qk_norm : nullptr, step.meta.positions, inv_freq_,
                      kv.k[static_cast<std::size_t>(i)], kv.v[static_cast<std::size_t>(i)],
                      step.meta, kv.layout);
    // Causal attention over the paged cache: prefill chunks exact, decodes through MAC when on.
    attention(i, step, kv, q, attn);
    be_.linear(attn.reshape({T, c.q_size()}), L.wo, nullptr, proj);
    // Post-attention RMSNorm with the residual add, then the SwiGLU MLP.
    be_.rms_norm(proj, &residual, L.post_attn_norm, h, c.rms_norm_eps);
    be_.linear_swiglu(h, L.w_gate_up, gate_up, act);
    be_.linear(act, L.w_down, nullptr, proj);
  }
  // Final residual add + norm, then logits only for the rows that will be sampled.
  be_.rms_norm(proj, &residual, final_norm_, h, c.rms_norm_eps);
  const Tensor& logits = step.buffer(buf_.logits);
  if (step.num_logits == 0) return logits;
  be_.gather_rows(h, step.logits_rows, step.buffer(buf_.last_hidden));
  be_.linear(step.buffer(buf_.last_hidden), lm_head_, nullptr, logits);
  return logits;
}

}  // namespace macserve::models
