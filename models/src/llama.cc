// The Llama-family decoder: Llama 2/3/3.1, Qwen2 (q/k/v biases) and Qwen3 (per-head q/k RMSNorm,
// head_dim from config) differ only in the flags of ModelConfig. forward() reads top to bottom like
// the architecture: embed -> N x (norm, attention, norm, SwiGLU MLP) -> norm -> logits.
#include "macserve/models/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "macserve/core/error.h"
#include "macserve/core/logging.h"

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

kernels::RopeScalingType to_kernel(RopeScaling s) {
  switch (s) {
    case RopeScaling::kNone: return kernels::RopeScalingType::kNone;
    case RopeScaling::kLlama3: return kernels::RopeScalingType::kLlama3;
    case RopeScaling::kLinear: return kernels::RopeScalingType::kLinear;
  }
  return kernels::RopeScalingType::kNone;
}

}  // namespace

LlamaModel::LlamaModel(Checkpoint ckpt, backend::Backend& be) : config_(ckpt.config), be_(be) {
  const ModelConfig& c = config_;
  embed_ = take(ckpt, "model.embed_tokens.weight", be);
  layers_.resize(static_cast<std::size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer& L = layers_[static_cast<std::size_t>(i)];
    L.input_norm = take(ckpt, p + "input_layernorm.weight", be);
    L.post_attn_norm = take(ckpt, p + "post_attention_layernorm.weight", be);
    L.wq = take(ckpt, p + "self_attn.q_proj.weight", be);
    L.wk = take(ckpt, p + "self_attn.k_proj.weight", be);
    L.wv = take(ckpt, p + "self_attn.v_proj.weight", be);
    L.wo = take(ckpt, p + "self_attn.o_proj.weight", be);
    if (c.attention_bias) {
      L.bq = take(ckpt, p + "self_attn.q_proj.bias", be);
      L.bk = take(ckpt, p + "self_attn.k_proj.bias", be);
      L.bv = take(ckpt, p + "self_attn.v_proj.bias", be);
    }
    if (c.qk_norm) {
      L.q_norm = take(ckpt, p + "self_attn.q_norm.weight", be);
      L.k_norm = take(ckpt, p + "self_attn.k_norm.weight", be);
    }
    L.w_gate_up = fuse_gate_up(take_host(ckpt, p + "mlp.gate_proj.weight"),
                               take_host(ckpt, p + "mlp.up_proj.weight"));
    L.w_down = take(ckpt, p + "mlp.down_proj.weight", be);
  }
  final_norm_ = take(ckpt, "model.norm.weight", be);
  lm_head_ = c.tie_word_embeddings ? embed_ : take(ckpt, "lm_head.weight", be);

  kernels::RopeFreqParams rp{c.head_dim, c.rope_theta, to_kernel(c.rope_scaling), c.rope_factor,
                             c.rope_low_freq_factor, c.rope_high_freq_factor,
                             c.rope_original_max_position};
  Tensor host_freq = Tensor::empty_host(DType::kF32, {c.head_dim / 2});
  kernels::cpu::rope_inv_freq(rp, host_freq.data_as<float>());
  inv_freq_ = be.alloc(DType::kF32, {c.head_dim / 2});
  be.copy_from_host(host_freq.data(), inv_freq_);
  const char* env = std::getenv("MACSERVE_CUDA_GRAPHS");  // env: MACSERVE_CUDA_GRAPHS=0 disables
  graphs_enabled_ = be.supports_graphs() && !(env != nullptr && std::string(env) == "0");
}

LlamaModel::~LlamaModel() {
  drop_graphs();
  if (!mac_host_.empty()) be_.unregister_host_buffer(mac_host_.data());
}

void LlamaModel::set_graphs(bool enabled) {
  graphs_enabled_ = enabled && be_.supports_graphs();
  if (!graphs_enabled_) drop_graphs();
}

void LlamaModel::drop_graphs() {
  for (const auto& g : graphs_) be_.drop_graph(g.second);
  graphs_.clear();
}

// [inter, hidden] x 2 -> [2 * inter, hidden]: one GEMM computes gate and up side by side. Fused on
// the host (float32), then uploaded in the backend's weight dtype.
Tensor LlamaModel::fuse_gate_up(const Tensor& gate, const Tensor& up) {
  const int64_t inter = gate.dim(0);
  const int64_t hidden = gate.dim(1);
  Tensor host = Tensor::empty_host(DType::kF32, {2 * inter, hidden});
  std::memcpy(host.data_as<float>(), gate.data(), gate.nbytes());
  std::memcpy(host.data_as<float>() + inter * hidden, up.data(), up.nbytes());
  return be_.upload_weight(host);
}

int64_t LlamaModel::weight_bytes() const {
  int64_t total = embed_.nbytes() + final_norm_.nbytes();
  if (!config_.tie_word_embeddings) total += lm_head_.nbytes();
  for (const Layer& L : layers_) {
    for (const Tensor* t : {&L.input_norm, &L.post_attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.bq, &L.bk,
                            &L.bv, &L.q_norm, &L.k_norm, &L.w_gate_up, &L.w_down})
      if (t->defined()) total += static_cast<int64_t>(t->nbytes());
  }
  return total;
}

void LlamaModel::ensure_workspace(int64_t num_tokens, int64_t num_logits, int64_t mac_seqs) {
  const ModelConfig& c = config_;
  const DType act = be_.activation_dtype();  // inputs of linear layers: f32 on CPU, bf16 on CUDA
  if (num_tokens > ws_tokens_) {
    ws_tokens_ = num_tokens;
    ++ws_generation_;
    residual_ = be_.alloc(DType::kF32, {num_tokens, c.hidden_size});
    normed_ = be_.alloc(act, {num_tokens, c.hidden_size});
    q_ = be_.alloc(DType::kF32, {num_tokens, c.num_q_heads, c.head_dim});
    k_ = be_.alloc(DType::kF32, {num_tokens, c.num_kv_heads, c.head_dim});
    v_ = be_.alloc(DType::kF32, {num_tokens, c.num_kv_heads, c.head_dim});
    attn_ = be_.alloc(act, {num_tokens, c.num_q_heads, c.head_dim});
    proj_ = be_.alloc(DType::kF32, {num_tokens, c.hidden_size});
    gate_up_ = be_.alloc(DType::kF32, {num_tokens, 2 * c.intermediate_size});
    act_ = be_.alloc(act, {num_tokens, c.intermediate_size});
    ids_ = be_.alloc(DType::kI32, {num_tokens});
    q_pre_ = be_.alloc(DType::kF32, {num_tokens, c.num_q_heads, c.head_dim});
    audit_ = be_.alloc(DType::kF32, {num_tokens, c.num_q_heads, c.head_dim});
    meta_.positions = be_.alloc(DType::kI32, {num_tokens});
    meta_.slot_mapping = be_.alloc(DType::kI64, {num_tokens});
  }
  if (mac_seqs > mac_rows_cap_) {
    // MAC telemetry for as many sequence rows as the step has tokens (a step never has more).
    mac_rows_cap_ = std::max(mac_seqs, ws_tokens_);
    ++ws_generation_;
    const int64_t bytes = mac_layout(mac_rows_cap_).bytes;
    mac_tel_ = be_.alloc(DType::kU8, {bytes});
    if (!mac_host_.empty()) be_.unregister_host_buffer(mac_host_.data());
    mac_host_.assign(static_cast<std::size_t>(bytes), 0);
    be_.register_host_buffer(mac_host_.data(), mac_host_.size());
  }
  if (num_logits > ws_logits_) {
    ws_logits_ = num_logits;
    ++ws_generation_;
    last_hidden_ = be_.alloc(act, {num_logits, c.hidden_size});
    logits_ = be_.alloc(DType::kF32, {num_logits, c.vocab_size});
    logits_rows_ = be_.alloc(DType::kI32, {num_logits});
  }
}

// Copies the step's host metadata into backend tensors sized for this step.
void LlamaModel::upload_inputs(const StepInputs& in) {
  const int64_t T = in.num_tokens();
  auto put = [&](const auto& vec, Tensor& dst, DType dtype, std::vector<int64_t> shape) {
    if (!dst.defined() || dst.numel() < static_cast<int64_t>(vec.size()) || dst.dtype() != dtype) {
      dst = be_.alloc(dtype, {static_cast<int64_t>(vec.size())});
      ++ws_generation_;
    }
    Tensor view = dst.reshape({dst.numel()}).slice_rows(0, static_cast<int64_t>(vec.size())).reshape(shape);
    if (!vec.empty()) be_.copy_from_host(vec.data(), view);
    return view;
  };
  Tensor ids_view = ids_.slice_rows(0, T);
  be_.copy_from_host(in.token_ids.data(), ids_view);
  step_meta_.positions = meta_.positions.slice_rows(0, T);
  be_.copy_from_host(in.positions.data(), step_meta_.positions);
  step_meta_.slot_mapping = meta_.slot_mapping.slice_rows(0, T);
  be_.copy_from_host(in.slot_mapping.data(), step_meta_.slot_mapping);
  step_meta_.query_start = put(in.query_start, meta_.query_start, DType::kI32, {in.num_seqs() + 1});
  step_meta_.context_lens = put(in.context_lens, meta_.context_lens, DType::kI32, {in.num_seqs()});
  step_meta_.block_tables = put(in.block_tables, meta_.block_tables, DType::kI32,
                                {in.num_seqs(), in.max_blocks_per_seq});
  step_meta_.num_seqs = in.num_seqs();
  step_meta_.max_blocks_per_seq = in.max_blocks_per_seq;
  step_meta_.max_query_len = 0;
  for (int64_t s = 0; s < in.num_seqs(); ++s)
    step_meta_.max_query_len = std::max<int64_t>(step_meta_.max_query_len, in.query_start[s + 1] - in.query_start[s]);
  step_meta_.max_context_len = *std::max_element(in.context_lens.begin(), in.context_lens.end());
  if (!in.logits_rows.empty()) be_.copy_from_host(in.logits_rows.data(), logits_rows_.slice_rows(0, in.logits_rows.size()));
  if (!in.mac.enabled) return;
  // MAC: per-sequence state on the backend once per step (every layer reads it), and zeroed audit
  // sums (they accumulate).
  const int64_t S = in.num_seqs();
  mac_modes_view_ = put(in.mac.modes, mac_modes_, DType::kU8, {S});
  mac_slots_view_ = put(in.mac.ring_slots, mac_slots_, DType::kI32, {S});
  mac_valid_from_view_ = put(in.mac.ring_valid_from, mac_valid_from_, DType::kI32, {S});
  mac_rows_from_view_ = put(in.mac.rows_from, mac_rows_from_, DType::kI32, {S});
  mac_num_decode_ = std::count(in.mac.modes.begin(), in.mac.modes.end(), kernels::kMacDecode);
  mac_rows_ = S;
  if (in.mac.audit) {
    const MacTelemetryLayout lay = mac_layout(S);
    be_.fill_zero(mac_tel_.slice_rows(lay.audit, lay.bytes));
  }
}

LlamaModel::MacTelemetryLayout LlamaModel::mac_layout(int64_t rows) const {
  const auto align = [](int64_t x) { return (x + 255) / 256 * 256; };
  const int64_t L = config_.num_layers;
  MacTelemetryLayout lay;
  lay.kv_tokens_read = align(L * rows * config_.num_q_heads * static_cast<int64_t>(sizeof(kernels::MacHeadDecision)));
  lay.audit = lay.kv_tokens_read + align(L * rows * static_cast<int64_t>(sizeof(int64_t)));
  lay.bytes = lay.audit + L * 2 * static_cast<int64_t>(sizeof(double));
  return lay;
}

// One device -> host copy of the step's telemetry; the logits copy that follows synchronises it.
void LlamaModel::fetch_mac_outputs(const StepInputs& in) {
  const MacTelemetryLayout lay = mac_layout(mac_rows_);
  be_.copy_to_host_async(mac_tel_.slice_rows(0, lay.bytes), mac_host_.data());
  pending_mac_ = {true, mac_rows_, in.num_seqs(), in.mac.modes, in.context_lens, in.mac.audit};
}

void LlamaModel::read_mac_outputs(MacStepOutputs& out) {
  const PendingMac& pm = pending_mac_;
  MACSERVE_CHECK(pm.valid, "read_mac_outputs: the last forward had no MAC outputs");
  const int64_t L = config_.num_layers, S = pm.num_seqs, R = pm.rows, Hq = config_.num_q_heads;
  const MacTelemetryLayout lay = mac_layout(R);
  const auto* dec = reinterpret_cast<const kernels::MacHeadDecision*>(mac_host_.data() + lay.decisions);
  const auto* kv_read = reinterpret_cast<const int64_t*>(mac_host_.data() + lay.kv_tokens_read);
  const auto* audit = reinterpret_cast<const double*>(mac_host_.data() + lay.audit);
  out.decisions.assign(static_cast<std::size_t>(L * S * Hq), {});
  out.kv_tokens_read.assign(static_cast<std::size_t>(L * S), 0);
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t s = 0; s < S; ++s) {
      const auto i = static_cast<std::size_t>(l * S + s);
      if (pm.modes[static_cast<std::size_t>(s)] != kernels::kMacDecode) {  // exact: what the oracle reports
        out.kv_tokens_read[i] = int64_t{pm.context_lens[static_cast<std::size_t>(s)]} * config_.num_kv_heads;
        continue;
      }
      std::copy_n(dec + (l * R + s) * Hq, Hq, out.decisions.begin() + static_cast<std::ptrdiff_t>(i) * Hq);
      out.kv_tokens_read[i] = kv_read[l * R + s];
    }
  }
  out.audit_err_sq.assign(static_cast<std::size_t>(L), 0.0);
  out.audit_ref_sq.assign(static_cast<std::size_t>(L), 0.0);
  if (!pm.audit) return;
  for (int64_t l = 0; l < L; ++l) {
    out.audit_err_sq[static_cast<std::size_t>(l)] = audit[2 * l];
    out.audit_ref_sq[static_cast<std::size_t>(l)] = audit[2 * l + 1];
  }
}

void LlamaModel::validate(const StepInputs& in, const KvCacheView& kv) const {
  const int64_t T = in.num_tokens();
  const int64_t S = in.num_seqs();
  MACSERVE_CHECK(T > 0 && S > 0, "empty step");
  MACSERVE_CHECK(static_cast<int64_t>(in.positions.size()) == T && static_cast<int64_t>(in.slot_mapping.size()) == T,
                 "positions/slot_mapping must have one entry per token");
  MACSERVE_CHECK(static_cast<int64_t>(in.query_start.size()) == S + 1 && in.query_start[0] == 0 &&
                     in.query_start[S] == T, "query_start must span the tokens");
  MACSERVE_CHECK(static_cast<int64_t>(in.block_tables.size()) == S * in.max_blocks_per_seq, "block table size");
  MACSERVE_CHECK(static_cast<int64_t>(kv.k.size()) == config_.num_layers, "KV cache has {} layers, model {}",
                 kv.k.size(), config_.num_layers);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = in.query_start[s + 1] - in.query_start[s];
    MACSERVE_CHECK(n > 0 && in.context_lens[s] >= n &&
                       in.context_lens[s] <= in.max_blocks_per_seq * kv.layout.block_size,
                   "sequence {}: {} queries, context {}", s, n, in.context_lens[s]);
  }
  for (int32_t r : in.logits_rows) MACSERVE_CHECK(r >= 0 && r < T, "logits row {} out of range", r);
  if (in.mac.enabled) {
    const auto n = static_cast<std::size_t>(S);
    MACSERVE_CHECK(in.mac.modes.size() == n && in.mac.ring_slots.size() == n && in.mac.ring_valid_from.size() == n &&
                       in.mac.rows_from.size() == n, "MAC inputs need one entry per sequence");
    MACSERVE_CHECK(static_cast<int64_t>(kv.mac_rings.size()) == config_.num_layers, "MAC rings missing");
    for (int64_t s = 0; s < S; ++s)
      MACSERVE_CHECK(in.mac.modes[s] != kernels::kMacDecode || in.query_start[s + 1] - in.query_start[s] == 1,
                     "MAC decode sequence {} must have exactly one query", s);
  }
}

void LlamaModel::attention(int64_t layer, const StepInputs& in, const KvCacheView& kv, const Tensor& q,
                           const Tensor& attn) {
  const auto l = static_cast<std::size_t>(layer);
  const float scale = 1.0f / std::sqrt(static_cast<float>(config_.head_dim));
  if (!in.mac.enabled) {
    be_.paged_attention(q, kv.k[l], kv.v[l], attn, step_meta_, kv.layout, scale);
    return;
  }
  // MAC: decisions and KV telemetry go to this layer's part of the step's telemetry buffer; an
  // audited step also runs exact attention into audit_ and sums the error there.
  const int64_t T = in.num_tokens(), R = mac_rows_, Hq = config_.num_q_heads;
  const MacTelemetryLayout lay = mac_layout(R);
  auto* tel = mac_tel_.data_as<uint8_t>();
  backend::Backend::MacArgs args{&in.mac.config, &kv.mac_rings.at(l), mac_modes_view_.data_as<int8_t>(),
                                 mac_slots_view_.data_as<int32_t>(), mac_valid_from_view_.data_as<int32_t>(),
                                 mac_rows_from_view_.data_as<int32_t>(), mac_num_decode_,
                                 reinterpret_cast<kernels::MacHeadDecision*>(tel + lay.decisions) + layer * R * Hq,
                                 reinterpret_cast<int64_t*>(tel + lay.kv_tokens_read) + layer * R};
  args.layer = static_cast<int32_t>(layer);
  const Tensor exact = audit_.slice_rows(0, T);
  if (in.mac.audit) {
    args.audit_exact = &exact;
    args.audit_sums = reinterpret_cast<double*>(tel + lay.audit) + 2 * layer;
  }
  be_.mac_attention(q, q_pre_.slice_rows(0, T), kv.k[l], kv.v[l], attn, step_meta_, kv.layout, scale, args);
}

Tensor LlamaModel::forward(const StepInputs& in, const KvCacheView& kv, MacStepOutputs* mac_out) {
  validate(in, kv);
  Tensor logits;
  if (graph_eligible(in)) {
    logits = forward_graph(in, kv);
  } else {
    const int64_t T = in.num_tokens();
    const int64_t R = static_cast<int64_t>(in.logits_rows.size());
    ensure_workspace(T, std::max<int64_t>(R, 1), in.mac.enabled ? in.num_seqs() : 0);
    upload_inputs(in);
    logits = run_layers(in, kv);
  }
  if (in.mac.enabled && mac_out != nullptr) fetch_mac_outputs(in);
  else pending_mac_.valid = false;
  return logits;
}

namespace {
constexpr int64_t kGraphBuckets[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256};
constexpr std::size_t kMaxGraphs = 64;  // captured graphs kept per model (oldest dropped first)
// Block-table width bucket: x rounded up to an eighth of its power-of-two octave (>= 8), so the
// attention planned for the bucket's capacity wastes at most 1/8 of its splits.
int64_t width_bucket(int64_t x) {
  int64_t p = 8;
  while (p < x) p *= 2;
  const int64_t step = std::max<int64_t>(1, p / 16);
  return std::max<int64_t>(8, (x + step - 1) / step * step);
}
}  // namespace

bool LlamaModel::graph_eligible(const StepInputs& in) const {
  const int64_t S = in.num_seqs();
  if (!graphs_enabled_ || in.num_tokens() != S || S > kGraphBuckets[std::size(kGraphBuckets) - 1]) return false;
  // MAC: pure decode steps only (prefill rows and the audit run eagerly).
  if (in.mac.enabled && (in.mac.audit || std::any_of(in.mac.modes.begin(), in.mac.modes.end(),
                                                     [](int8_t m) { return m != kernels::kMacDecode; })))
    return false;
  if (static_cast<int64_t>(in.logits_rows.size()) != S) return false;
  for (int64_t s = 0; s < S; ++s)
    if (in.logits_rows[static_cast<std::size_t>(s)] != s) return false;
  return true;
}

// Pads a decode step to its batch bucket B (extra rows: token 0 at position 0, KV slot -1 so
// nothing is written, context 1 over block 0; with MAC context 0 and no ring slot) and its block tables to a bucketed width, so that
// every pointer and shape the kernels see is fixed per (B, width); the attention is planned for the
// width's capacity. The first step of a key runs eagerly (allocating any lazy workspace) and is
// then captured; later steps upload their inputs and replay.
Tensor LlamaModel::forward_graph(const StepInputs& in, const KvCacheView& kv) {
  const int64_t S = in.num_seqs();
  const int64_t B = *std::lower_bound(std::begin(kGraphBuckets), std::end(kGraphBuckets), S);
  const int64_t W = width_bucket(in.max_blocks_per_seq);
  StepInputs& p = padded_;
  p.token_ids.assign(in.token_ids.begin(), in.token_ids.end());
  p.token_ids.resize(static_cast<std::size_t>(B), 0);
  p.positions.assign(in.positions.begin(), in.positions.end());
  p.positions.resize(static_cast<std::size_t>(B), 0);
  p.slot_mapping.assign(in.slot_mapping.begin(), in.slot_mapping.end());
  p.slot_mapping.resize(static_cast<std::size_t>(B), -1);
  p.context_lens.assign(in.context_lens.begin(), in.context_lens.end());
  p.context_lens.resize(static_cast<std::size_t>(B), 1);
  p.query_start.resize(static_cast<std::size_t>(B + 1));
  p.logits_rows.resize(static_cast<std::size_t>(B));
  for (int64_t s = 0; s <= B; ++s) p.query_start[static_cast<std::size_t>(s)] = static_cast<int32_t>(s);
  for (int64_t s = 0; s < B; ++s) p.logits_rows[static_cast<std::size_t>(s)] = static_cast<int32_t>(s);
  p.max_blocks_per_seq = W;
  p.block_tables.assign(static_cast<std::size_t>(B * W), 0);
  for (int64_t s = 0; s < S; ++s)
    std::copy_n(in.block_tables.begin() + s * in.max_blocks_per_seq, in.max_blocks_per_seq,
                p.block_tables.begin() + s * W);
  p.mac = {};
  if (in.mac.enabled) {  // padded rows: inactive (context 0) without a ring slot: no reads, no writes
    p.mac.enabled = true;
    p.mac.config = in.mac.config;
    p.mac.modes.assign(static_cast<std::size_t>(B), kernels::kMacDecode);
    p.mac.ring_slots.assign(in.mac.ring_slots.begin(), in.mac.ring_slots.end());
    p.mac.ring_slots.resize(static_cast<std::size_t>(B), -1);
    p.mac.ring_valid_from.assign(in.mac.ring_valid_from.begin(), in.mac.ring_valid_from.end());
    p.mac.ring_valid_from.resize(static_cast<std::size_t>(B), 0);
    p.mac.rows_from.assign(static_cast<std::size_t>(B), 0);
    std::fill(p.context_lens.begin() + S, p.context_lens.end(), 0);
  }

  ensure_workspace(B, B, in.mac.enabled ? B : 0);
  upload_inputs(p);
  step_meta_.max_context_len = W * kv.layout.block_size;  // plan for the width: fixed per graph
  if (graphs_generation_ != ws_generation_) {  // buffers moved: every graph points at old ones
    drop_graphs();
    graphs_generation_ = ws_generation_;
  }
  const GraphKey key{B, W, in.mac.enabled};
  for (const auto& [k, handle] : graphs_) {
    if (k != key) continue;
    be_.replay_graph(handle);
    return logits_.slice_rows(0, S);
  }
  // First step of this key: eager (it also allocates what the kernels create lazily), then capture.
  const int64_t generation = ws_generation_;
  Tensor logits = run_layers(p, kv);
  if (ws_generation_ != generation) return logits.slice_rows(0, S);
  try {
    if (graphs_.size() >= kMaxGraphs) {
      be_.drop_graph(graphs_.front().second);
      graphs_.erase(graphs_.begin());
    }
    be_.begin_capture();
    run_layers(p, kv);
    graphs_.emplace_back(key, be_.end_capture());
  } catch (const std::exception& e) {
    be_.abort_capture();
    spdlog::warn("CUDA graph capture of the batch-{} decode step failed, decoding eagerly from now on: {}", B,
                 e.what());
    set_graphs(false);
  }
  return logits.slice_rows(0, S);
}

Tensor LlamaModel::run_layers(const StepInputs& in, const KvCacheView& kv) {
  const ModelConfig& c = config_;
  const int64_t T = in.num_tokens();
  const int64_t R = static_cast<int64_t>(in.logits_rows.size());
  Tensor residual = residual_.slice_rows(0, T), h = normed_.slice_rows(0, T);
  Tensor q = q_.slice_rows(0, T), k = k_.slice_rows(0, T), v = v_.slice_rows(0, T);
  Tensor attn = attn_.slice_rows(0, T), proj = proj_.slice_rows(0, T);
  Tensor gate_up = gate_up_.slice_rows(0, T), act = act_.slice_rows(0, T);

  // Token embeddings start the residual stream.
  be_.embedding(ids_.slice_rows(0, T), embed_, residual);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const Layer& L = layers_[static_cast<std::size_t>(i)];
    // Pre-attention RMSNorm; from layer 1 on it first adds the previous MLP output to the residual.
    if (i == 0) be_.rms_norm(residual, nullptr, L.input_norm, h, c.rms_norm_eps);
    else be_.rms_norm(proj, &residual, L.input_norm, h, c.rms_norm_eps);
    // Q, K, V projections (+ biases for Qwen2).
    be_.linear(h, L.wq, c.attention_bias ? &L.bq : nullptr, q);
    be_.linear(h, L.wk, c.attention_bias ? &L.bk : nullptr, k);
    be_.linear(h, L.wv, c.attention_bias ? &L.bv : nullptr, v);
    // Qwen3: RMSNorm over each head's vector of q and k, before RoPE.
    if (c.qk_norm) {
      be_.rms_norm(q, nullptr, L.q_norm, q, c.rms_norm_eps);
      be_.rms_norm(k, nullptr, L.k_norm, k, c.rms_norm_eps);
    }
    // Rotary position embedding, then this step's K/V into the paged cache; MAC matches the query
    // before RoPE (after q_norm for Qwen3), so it keeps a copy (one fused kernel on CUDA).
    const Tensor q_pre = q_pre_.slice_rows(0, T);
    be_.rope_kv_write(q, k, v, in.mac.enabled ? &q_pre : nullptr, step_meta_.positions, inv_freq_,
                      kv.k[static_cast<std::size_t>(i)], kv.v[static_cast<std::size_t>(i)], step_meta_, kv.layout);
    // Causal attention over the paged cache: prefill chunks exact, decodes through MAC when on.
    attention(i, in, kv, q, attn);
    be_.linear(attn.reshape({T, c.q_size()}), L.wo, nullptr, proj);
    // Post-attention RMSNorm with the residual add, then the SwiGLU MLP.
    be_.rms_norm(proj, &residual, L.post_attn_norm, h, c.rms_norm_eps);
    be_.linear(h, L.w_gate_up, nullptr, gate_up);
    be_.swiglu(gate_up, act);
    be_.linear(act, L.w_down, nullptr, proj);
  }
  // Final residual add + norm, then logits only for the rows that will be sampled.
  be_.rms_norm(proj, &residual, final_norm_, h, c.rms_norm_eps);
  if (R == 0) return logits_.slice_rows(0, 0);
  Tensor rows = logits_rows_.slice_rows(0, R);
  Tensor last = last_hidden_.slice_rows(0, R);
  be_.gather_rows(h, rows, last);
  Tensor logits = logits_.slice_rows(0, R);
  be_.linear(last, lm_head_, nullptr, logits);
  return logits;
}

}  // namespace macserve::models
