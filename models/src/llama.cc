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

// Rows [begin, end) of a host weight (a view; GGUF blocks are whole rows).
Tensor slice_rows(const Tensor& t, SliceRange r) {
  return r.begin == 0 && r.end == t.dim(0) ? t : t.slice_rows(r.begin, r.end);
}

// Columns [begin, end) of a host weight [rows, cols] (row-parallel layers' input slices), copied.
// GGUF blocks are sliced as blocks when both ends fall on a block boundary (32 elements: head and
// MLP slices of real models do), so the rank multiplies with them in place as it would unsliced;
// otherwise the slice is dequantized to float32 first.
Tensor slice_cols(const Tensor& t, SliceRange c) {
  if (c.begin == 0 && c.end == t.dim(1)) return t;
  constexpr int64_t kBlock = 32;
  if (is_quantized(t.dtype()) && (c.begin % kBlock != 0 || c.end % kBlock != 0))
    return slice_cols(to_f32(t), c);
  const std::size_t row = dtype_bytes(t.dtype(), t.dim(1));
  const std::size_t skip = dtype_bytes(t.dtype(), c.begin),
                    width = dtype_bytes(t.dtype(), c.size());
  Tensor out = Tensor::empty_host(t.dtype(), {t.dim(0), c.size()});
  for (int64_t r = 0; r < t.dim(0); ++r)
    std::memcpy(out.data_as<uint8_t>() + static_cast<std::size_t>(r) * width,
                t.data_as<uint8_t>() + static_cast<std::size_t>(r) * row + skip, width);
  return out;
}

SliceRange times(SliceRange r, int64_t k) { return {r.begin * k, r.end * k}; }

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

LlamaModel::LlamaModel(Checkpoint ckpt, backend::Backend& be, const Shard& shard)
    : Model(be, shard_config(ckpt.config, shard_layout(ckpt.config, shard.rank, shard.size))),
      config_(ckpt.config),
      shard_(shard),
      layout_(shard_layout(config_, shard.rank, shard.size)),
      local_(shard_config(config_, layout_)),
      be_(be) {
  const ModelConfig& c = config_;
  MACSERVE_CHECK(shard.size == 1 || shard.comm != nullptr, "rank {} of {} has no communicator",
                 shard.rank, shard.size);
  // Vocabulary-parallel: this rank's rows of the embedding (and of lm_head, tied or not).
  embed_ =
      be.upload_weight(slice_rows(take_host(ckpt, "model.embed_tokens.weight"), layout_.vocab));
  layers_.resize(static_cast<std::size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) load_layer(ckpt, i);
  final_norm_ = take(ckpt, "model.norm.weight", be);
  lm_head_ = c.tie_word_embeddings
                 ? embed_
                 : be.upload_weight(slice_rows(take_host(ckpt, "lm_head.weight"), layout_.vocab));

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

// One decoder layer's weights, this rank's slices of them: column-parallel Q/K/V (+ biases) and
// gate/up by output rows, row-parallel o_proj and down_proj by input columns; norms whole.
void LlamaModel::load_layer(Checkpoint& ckpt, int64_t i) {
  const std::string p = "model.layers." + std::to_string(i) + ".";
  Layer& L = layers_[static_cast<std::size_t>(i)];
  L.input_norm = take(ckpt, p + "input_layernorm.weight", be_);
  L.post_attn_norm = take(ckpt, p + "post_attention_layernorm.weight", be_);
  const std::string attn = p + "self_attn.";
  L.w_qkv = fuse_rows(qkv_slices(ckpt, attn, "_proj.weight"));
  if (config_.attention_bias) L.b_qkv = fuse_rows(qkv_slices(ckpt, attn, "_proj.bias"));
  L.wo = be_.upload_weight(slice_cols(take_host(ckpt, attn + "o_proj.weight"),
                                      times(layout_.q_heads, config_.head_dim)));
  if (config_.qk_norm) {
    L.q_norm = take(ckpt, attn + "q_norm.weight", be_);
    L.k_norm = take(ckpt, attn + "k_norm.weight", be_);
  }
  L.w_gate_up =
      fuse_rows({slice_rows(take_host(ckpt, p + "mlp.gate_proj.weight"), layout_.intermediate),
                 slice_rows(take_host(ckpt, p + "mlp.up_proj.weight"), layout_.intermediate)});
  L.w_down = be_.upload_weight(
      slice_cols(take_host(ckpt, p + "mlp.down_proj.weight"), layout_.intermediate));
}

std::vector<Tensor> LlamaModel::qkv_slices(Checkpoint& ckpt, const std::string& prefix,
                                           const std::string& suffix) const {
  const int64_t D = config_.head_dim;
  return {slice_rows(take_host(ckpt, prefix + "q" + suffix), times(layout_.q_heads, D)),
          slice_rows(take_host(ckpt, prefix + "k" + suffix), times(layout_.kv_heads, D)),
          slice_rows(take_host(ckpt, prefix + "v" + suffix), times(layout_.kv_heads, D))};
}

// Sums a row-parallel layer's partial outputs over the ranks (in place); nothing on one rank.
void LlamaModel::all_reduce(const Tensor& x) const {
  if (shard_.size > 1) shard_.comm->all_reduce_sum(x);
}

// The activations of one step; the residual stream, projections' outputs and logits in f32, the
// inputs of linear layers in the backend's activation dtype (f32 on CPU, bf16 on CUDA).
void LlamaModel::declare_buffers() {
  const ModelConfig& c = local_;  // this rank's heads, MLP rows and vocabulary slice
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
  buf_.logits = add_buffer(Rows::kLogits, DType::kF32, {config_.vocab_size});
  buf_.logits_slice = shard_.size > 1 ? add_buffer(Rows::kLogits, DType::kF32, {c.vocab_size}) : -1;
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
  const ModelConfig& c = local_;
  const int64_t T = step.num_tokens;
  const Tensor &residual = step.buffer(buf_.residual), &h = step.buffer(buf_.normed);
  const Tensor &qkv = step.buffer(buf_.qkv), &q = step.buffer(buf_.q);
  const Tensor &attn = step.buffer(buf_.attn), &proj = step.buffer(buf_.proj);
  const Tensor &gate_up = step.buffer(buf_.gate_up), &act = step.buffer(buf_.act);

  // Token embeddings start the residual stream (tensor parallel: each rank looks up the tokens of
  // its vocabulary slice, zero rows for the others, and the sum over the ranks is the lookup).
  if (shard_.size > 1) {
    be_.embedding_slice(step.token_ids, embed_, layout_.vocab.begin, residual);
    all_reduce(residual);
  } else {
    be_.embedding(step.token_ids, embed_, residual);
  }
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
    all_reduce(proj);  // tensor parallel: each rank's heads gave a partial sum
    // Post-attention RMSNorm with the residual add, then the SwiGLU MLP.
    be_.rms_norm(proj, &residual, L.post_attn_norm, h, c.rms_norm_eps);
    be_.linear_swiglu(h, L.w_gate_up, gate_up, act);
    be_.linear(act, L.w_down, nullptr, proj);
    all_reduce(proj);  // tensor parallel: each rank's MLP rows gave a partial sum
  }
  // Final residual add + norm, then logits only for the rows that will be sampled.
  be_.rms_norm(proj, &residual, final_norm_, h, c.rms_norm_eps);
  const Tensor& logits = step.buffer(buf_.logits);
  if (step.num_logits == 0) return logits;
  be_.gather_rows(h, step.logits_rows, step.buffer(buf_.last_hidden));
  if (shard_.size == 1) {
    be_.linear(step.buffer(buf_.last_hidden), lm_head_, nullptr, logits);
    return logits;
  }
  // Tensor parallel: this rank's vocabulary columns, gathered in rank order into the full row.
  const Tensor& slice = step.buffer(buf_.logits_slice);
  be_.linear(step.buffer(buf_.last_hidden), lm_head_, nullptr, slice);
  shard_.comm->all_gather_cols(slice, logits);
  return logits;
}

}  // namespace macserve::models
