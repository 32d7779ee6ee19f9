// StepExecutor: upload of a step's inputs, the activation workspace, MAC telemetry, and decode
// steps replayed from graphs. A model's layers run between upload and the telemetry copy.
#include "macserve/backend/step_executor.h"

#include <algorithm>
#include <exception>
#include <iterator>

#include "macserve/core/error.h"
#include "macserve/core/logging.h"

namespace macserve::backend {
namespace {

constexpr int64_t kGraphBuckets[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256};
constexpr std::size_t kMaxGraphs = 64;  // captured graphs kept per executor (oldest dropped first)

// Block-table width bucket: x rounded up to an eighth of its power-of-two octave (>= 8), so the
// attention planned for the bucket's capacity wastes at most 1/8 of its splits.
int64_t width_bucket(int64_t x) {
  int64_t p = 8;
  while (p < x) p *= 2;
  const int64_t step = std::max<int64_t>(1, p / 16);
  return std::max<int64_t>(8, (x + step - 1) / step * step);
}

}  // namespace

Backend::MacArgs DeviceStep::mac_args(int64_t layer, const kernels::MacRing& ring,
                                      const Tensor& audit_exact) const {
  Backend::MacArgs args{&mac_config,
                        &ring,
                        mac_modes.data_as<int8_t>(),
                        mac_ring_slots.data_as<int32_t>(),
                        mac_ring_valid_from.data_as<int32_t>(),
                        mac_rows_from.data_as<int32_t>(),
                        mac_num_decode,
                        mac_decisions + layer * mac_rows * num_q_heads,
                        mac_kv_tokens_read + layer * mac_rows};
  args.layer = static_cast<int32_t>(layer);
  if (mac_audit) {
    args.audit_exact = &audit_exact;
    args.audit_sums = mac_audit_sums + 2 * layer;
  }
  return args;
}

StepExecutor::StepExecutor(Backend& be, Shape shape)
    : be_(be), shape_(shape), graphs_enabled_(be.supports_graphs()) {
  step_.num_q_heads = shape.num_q_heads;
}

StepExecutor::~StepExecutor() {
  drop_graphs();
  if (!mac_host_.empty()) be_.unregister_host_buffer(mac_host_.data());
}

int StepExecutor::add_buffer(Rows rows, DType dtype, std::vector<int64_t> row_shape) {
  MACSERVE_CHECK(ws_tokens_ == 0 && ws_logits_ == 0,
                 "workspace buffers are declared before the first step");
  buffers_.push_back({rows, dtype, std::move(row_shape), {}});
  return static_cast<int>(buffers_.size()) - 1;
}

void StepExecutor::set_graphs(bool enabled) {
  graphs_enabled_ = enabled && be_.supports_graphs();
  if (!graphs_enabled_) drop_graphs();
}

void StepExecutor::drop_graphs() {
  for (const Graph& g : graphs_) be_.drop_graph(g.handle);
  graphs_.clear();
}

void StepExecutor::validate(const StepArrays& in, const KvCacheView& kv) const {
  const int64_t T = in.num_tokens();
  const int64_t S = in.num_seqs();
  MACSERVE_CHECK(T > 0 && S > 0, "empty step");
  MACSERVE_CHECK(static_cast<int64_t>(in.positions.size()) == T &&
                     static_cast<int64_t>(in.slot_mapping.size()) == T,
                 "positions/slot_mapping must have one entry per token");
  MACSERVE_CHECK(static_cast<int64_t>(in.query_start.size()) == S + 1 && in.query_start[0] == 0 &&
                     in.query_start[S] == T,
                 "query_start must span the tokens");
  MACSERVE_CHECK(static_cast<int64_t>(in.block_tables.size()) == S * in.max_blocks_per_seq,
                 "block table size");
  MACSERVE_CHECK(static_cast<int64_t>(kv.k.size()) == shape_.num_layers,
                 "KV cache has {} layers, model {}", kv.k.size(), shape_.num_layers);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t n = in.query_start[s + 1] - in.query_start[s];
    MACSERVE_CHECK(n > 0 && in.context_lens[s] >= n &&
                       in.context_lens[s] <= in.max_blocks_per_seq * kv.layout.block_size,
                   "sequence {}: {} queries, context {}", s, n, in.context_lens[s]);
  }
  for (int32_t r : in.logits_rows) MACSERVE_CHECK(r >= 0 && r < T, "logits row {} out of range", r);
  if (in.mac) {
    const auto n = static_cast<std::size_t>(S);
    MACSERVE_CHECK(in.mac_modes.size() == n && in.mac_ring_slots.size() == n &&
                       in.mac_ring_valid_from.size() == n && in.mac_rows_from.size() == n,
                   "MAC inputs need one entry per sequence");
    MACSERVE_CHECK(static_cast<int64_t>(kv.mac_rings.size()) == shape_.num_layers,
                   "MAC rings missing");
    for (int64_t s = 0; s < S; ++s)
      MACSERVE_CHECK(
          in.mac_modes[s] != kernels::kMacDecode || in.query_start[s + 1] - in.query_start[s] == 1,
          "MAC decode sequence {} must have exactly one query", s);
  }
}

void StepExecutor::ensure_workspace(int64_t num_tokens, int64_t num_logits, int64_t mac_seqs) {
  auto grow = [&](Rows rows, int64_t n) {
    for (Buffer& b : buffers_) {
      if (b.rows != rows) continue;
      std::vector<int64_t> shape{n};
      shape.insert(shape.end(), b.row_shape.begin(), b.row_shape.end());
      b.storage = be_.alloc(b.dtype, std::move(shape));
    }
  };
  if (num_tokens > ws_tokens_) {
    ws_tokens_ = num_tokens;
    ++ws_generation_;
    grow(Rows::kTokens, num_tokens);
    ids_ = be_.alloc(DType::kI32, {num_tokens});
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
    grow(Rows::kLogits, num_logits);
    logits_rows_ = be_.alloc(DType::kI32, {num_logits});
  }
}

// Copies the step's host arrays into backend tensors sized for this step.
void StepExecutor::upload(const StepArrays& in) {
  const int64_t T = in.num_tokens(), S = in.num_seqs();
  auto put = [&](auto vec, Tensor& dst, DType dtype, std::vector<int64_t> shape) {
    const auto n = static_cast<int64_t>(vec.size());
    if (!dst.defined() || dst.numel() < n || dst.dtype() != dtype) {
      dst = be_.alloc(dtype, {n});
      ++ws_generation_;
    }
    Tensor view = dst.reshape({dst.numel()}).slice_rows(0, n).reshape(std::move(shape));
    if (!vec.empty()) be_.copy_from_host(vec.data(), view);
    return view;
  };
  DeviceStep& st = step_;
  st.num_tokens = T;
  st.num_logits = static_cast<int64_t>(in.logits_rows.size());
  st.token_ids = ids_.slice_rows(0, T);
  be_.copy_from_host(in.token_ids.data(), st.token_ids);
  AttentionMeta& m = st.meta;
  m.positions = meta_.positions.slice_rows(0, T);
  be_.copy_from_host(in.positions.data(), m.positions);
  m.slot_mapping = meta_.slot_mapping.slice_rows(0, T);
  be_.copy_from_host(in.slot_mapping.data(), m.slot_mapping);
  m.query_start = put(in.query_start, meta_.query_start, DType::kI32, {S + 1});
  m.context_lens = put(in.context_lens, meta_.context_lens, DType::kI32, {S});
  m.block_tables =
      put(in.block_tables, meta_.block_tables, DType::kI32, {S, in.max_blocks_per_seq});
  m.num_seqs = S;
  m.max_blocks_per_seq = in.max_blocks_per_seq;
  m.max_query_len = 0;
  for (int64_t s = 0; s < S; ++s)
    m.max_query_len = std::max<int64_t>(m.max_query_len, in.query_start[s + 1] - in.query_start[s]);
  m.max_context_len = *std::max_element(in.context_lens.begin(), in.context_lens.end());
  st.logits_rows = logits_rows_.slice_rows(0, st.num_logits);
  if (st.num_logits > 0) be_.copy_from_host(in.logits_rows.data(), st.logits_rows);
  st.mac = in.mac;
  st.mac_audit = in.mac && in.mac_audit;
  if (!in.mac) return;
  // MAC: per-sequence state on the backend once per step (every layer reads it), and zeroed audit
  // sums (they accumulate).
  st.mac_config = in.mac_config;
  st.mac_modes = put(in.mac_modes, mac_modes_, DType::kU8, {S});
  st.mac_ring_slots = put(in.mac_ring_slots, mac_slots_, DType::kI32, {S});
  st.mac_ring_valid_from = put(in.mac_ring_valid_from, mac_valid_from_, DType::kI32, {S});
  st.mac_rows_from = put(in.mac_rows_from, mac_rows_from_, DType::kI32, {S});
  st.mac_num_decode = std::count(in.mac_modes.begin(), in.mac_modes.end(), kernels::kMacDecode);
  st.mac_rows = S;
  const MacTelemetryLayout lay = mac_layout(S);
  auto* tel = mac_tel_.data_as<uint8_t>();
  st.mac_decisions = reinterpret_cast<kernels::MacHeadDecision*>(tel + lay.decisions);
  st.mac_kv_tokens_read = reinterpret_cast<int64_t*>(tel + lay.kv_tokens_read);
  st.mac_audit_sums = reinterpret_cast<double*>(tel + lay.audit);
  if (in.mac_audit) be_.fill_zero(mac_tel_.slice_rows(lay.audit, lay.bytes));
}

// The layers over the uploaded step, with the workspace sliced to it.
Tensor StepExecutor::run_layers(const Layers& layers) {
  step_.buffers.resize(buffers_.size());
  for (std::size_t i = 0; i < buffers_.size(); ++i)
    step_.buffers[i] = buffers_[i].storage.slice_rows(
        0, buffers_[i].rows == Rows::kTokens ? step_.num_tokens : step_.num_logits);
  return layers(step_);
}

StepExecutor::MacTelemetryLayout StepExecutor::mac_layout(int64_t rows) const {
  const auto align = [](int64_t x) { return (x + 255) / 256 * 256; };
  const int64_t L = shape_.num_layers;
  MacTelemetryLayout lay;
  lay.kv_tokens_read =
      align(L * rows * shape_.num_q_heads * static_cast<int64_t>(sizeof(kernels::MacHeadDecision)));
  lay.audit = lay.kv_tokens_read + align(L * rows * static_cast<int64_t>(sizeof(int64_t)));
  lay.bytes = lay.audit + L * 2 * static_cast<int64_t>(sizeof(double));
  return lay;
}

// One device -> host copy of the step's telemetry; the logits copy that follows synchronises it.
void StepExecutor::fetch_mac_outputs(const StepArrays& in) {
  const MacTelemetryLayout lay = mac_layout(step_.mac_rows);
  be_.copy_to_host_async(mac_tel_.slice_rows(0, lay.bytes), mac_host_.data());
  PendingMac& pm = pending_mac_;
  pm.valid = true;
  pm.rows = step_.mac_rows;
  pm.num_seqs = in.num_seqs();
  pm.modes.assign(in.mac_modes.begin(), in.mac_modes.end());
  pm.context_lens.assign(in.context_lens.begin(), in.context_lens.end());
  pm.audit = in.mac_audit;
}

void StepExecutor::read_mac_outputs(MacStepOutputs& out) const {
  const PendingMac& pm = pending_mac_;
  MACSERVE_CHECK(pm.valid, "read_mac_outputs: the last forward had no MAC outputs");
  const int64_t L = shape_.num_layers, S = pm.num_seqs, R = pm.rows, Hq = shape_.num_q_heads;
  const MacTelemetryLayout lay = mac_layout(R);
  const auto* dec =
      reinterpret_cast<const kernels::MacHeadDecision*>(mac_host_.data() + lay.decisions);
  const auto* kv_read = reinterpret_cast<const int64_t*>(mac_host_.data() + lay.kv_tokens_read);
  const auto* audit = reinterpret_cast<const double*>(mac_host_.data() + lay.audit);
  out.decisions.assign(static_cast<std::size_t>(L * S * Hq), {});
  out.kv_tokens_read.assign(static_cast<std::size_t>(L * S), 0);
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t s = 0; s < S; ++s) {
      const auto i = static_cast<std::size_t>(l * S + s);
      // An exact sequence reports what the oracle does: its whole context read.
      if (pm.modes[static_cast<std::size_t>(s)] != kernels::kMacDecode) {
        out.kv_tokens_read[i] =
            int64_t{pm.context_lens[static_cast<std::size_t>(s)]} * shape_.num_kv_heads;
        continue;
      }
      std::copy_n(dec + (l * R + s) * Hq, Hq,
                  out.decisions.begin() + static_cast<std::ptrdiff_t>(i) * Hq);
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

Tensor StepExecutor::run(const StepArrays& in, const KvCacheView& kv, bool want_mac_outputs,
                         const Layers& layers) {
  validate(in, kv);
  Tensor logits;
  if (graph_eligible(in)) {
    logits = run_graph(in, kv, layers);
  } else {
    const int64_t T = in.num_tokens();
    const auto R = static_cast<int64_t>(in.logits_rows.size());
    ensure_workspace(T, std::max<int64_t>(R, 1), in.mac ? in.num_seqs() : 0);
    upload(in);
    logits = run_layers(layers);
  }
  if (in.mac && want_mac_outputs)
    fetch_mac_outputs(in);
  else
    pending_mac_.valid = false;
  return logits;
}

bool StepExecutor::graph_eligible(const StepArrays& in) const {
  const int64_t S = in.num_seqs();
  if (!graphs_enabled_ || in.num_tokens() != S || S > kGraphBuckets[std::size(kGraphBuckets) - 1])
    return false;
  // MAC: pure decode steps only, MAC or plain rows (prefill rows and the audit run eagerly).
  if (in.mac && (in.mac_audit || std::any_of(in.mac_modes.begin(), in.mac_modes.end(),
                                             [](int8_t m) { return m == kernels::kMacExact; })))
    return false;
  if (static_cast<int64_t>(in.logits_rows.size()) != S) return false;
  for (int64_t s = 0; s < S; ++s)
    if (in.logits_rows[static_cast<std::size_t>(s)] != s) return false;
  return true;
}

// Pads a decode step to its batch bucket B (extra rows: token 0 at position 0, KV slot -1 so
// nothing is written, context 1 over block 0; with MAC context 0 and no ring slot) and its block
// tables to width W.
const StepArrays& StepExecutor::pad(const StepArrays& in, int64_t B, int64_t W) {
  const int64_t S = in.num_seqs();
  const auto b = static_cast<std::size_t>(B);
  PaddedStep& p = padded_;
  p.token_ids.assign(in.token_ids.begin(), in.token_ids.end());
  p.token_ids.resize(b, 0);
  p.positions.assign(in.positions.begin(), in.positions.end());
  p.positions.resize(b, 0);
  p.slot_mapping.assign(in.slot_mapping.begin(), in.slot_mapping.end());
  p.slot_mapping.resize(b, -1);
  p.context_lens.assign(in.context_lens.begin(), in.context_lens.end());
  p.context_lens.resize(b, 1);
  p.query_start.resize(b + 1);
  p.logits_rows.resize(b);
  for (int64_t s = 0; s <= B; ++s)
    p.query_start[static_cast<std::size_t>(s)] = static_cast<int32_t>(s);
  for (int64_t s = 0; s < B; ++s)
    p.logits_rows[static_cast<std::size_t>(s)] = static_cast<int32_t>(s);
  p.block_tables.assign(static_cast<std::size_t>(B * W), 0);
  for (int64_t s = 0; s < S; ++s)
    std::copy_n(in.block_tables.begin() + s * in.max_blocks_per_seq, in.max_blocks_per_seq,
                p.block_tables.begin() + s * W);
  StepArrays& a = p.arrays;
  a = {};
  a.token_ids = p.token_ids;
  a.positions = p.positions;
  a.slot_mapping = p.slot_mapping;
  a.query_start = p.query_start;
  a.context_lens = p.context_lens;
  a.block_tables = p.block_tables;
  a.max_blocks_per_seq = W;
  a.logits_rows = p.logits_rows;
  if (in.mac) {  // padded rows: inactive MAC decodes (context 0) without a ring slot: no reads, no
                 // writes
    p.mac_modes.assign(in.mac_modes.begin(), in.mac_modes.end());
    p.mac_modes.resize(b, kernels::kMacDecode);
    p.mac_ring_slots.assign(in.mac_ring_slots.begin(), in.mac_ring_slots.end());
    p.mac_ring_slots.resize(b, -1);
    p.mac_ring_valid_from.assign(in.mac_ring_valid_from.begin(), in.mac_ring_valid_from.end());
    p.mac_ring_valid_from.resize(b, 0);
    p.mac_rows_from.assign(b, 0);
    std::fill(p.context_lens.begin() + S, p.context_lens.end(), 0);
    a.mac = true;
    a.mac_config = in.mac_config;
    a.mac_modes = p.mac_modes;
    a.mac_ring_slots = p.mac_ring_slots;
    a.mac_ring_valid_from = p.mac_ring_valid_from;
    a.mac_rows_from = p.mac_rows_from;
  }
  return a;
}

// A pure decode step padded to its bucket, so that every pointer and shape the kernels see is
// fixed per (B, W); the attention is planned for the width's capacity. The first step of a key runs
// eagerly (allocating any lazy workspace) and is then captured; later steps upload their inputs
// and replay.
Tensor StepExecutor::run_graph(const StepArrays& in, const KvCacheView& kv, const Layers& layers) {
  const int64_t S = in.num_seqs();
  const int64_t B = *std::lower_bound(std::begin(kGraphBuckets), std::end(kGraphBuckets), S);
  const int64_t W = width_bucket(in.max_blocks_per_seq);
  const StepArrays& p = pad(in, B, W);
  ensure_workspace(B, B, in.mac ? B : 0);
  upload(p);
  step_.meta.max_context_len = W * kv.layout.block_size;  // plan for the width: fixed per graph
  if (graphs_generation_ != ws_generation_) {  // buffers moved: every graph points at old ones
    drop_graphs();
    graphs_generation_ = ws_generation_;
  }
  // A MAC graph launches the plain kernel only if it had plain rows, and MAC only if it had MAC
  // rows (the backend plans its launches from those host facts): both are part of the key.
  const auto has = [&](int8_t mode) {
    return std::find(p.mac_modes.begin(), p.mac_modes.end(), mode) != p.mac_modes.end();
  };
  const GraphKey key{B, W, in.mac, in.mac && has(kernels::kMacDecode),
                     in.mac && has(kernels::kMacPlain)};
  for (const Graph& g : graphs_) {
    if (g.key != key) continue;
    be_.replay_graph(g.handle);
    return g.logits.slice_rows(0, S);
  }
  // First step of this key: eager (it also allocates what the kernels create lazily), then capture.
  const int64_t generation = ws_generation_;
  Tensor logits = run_layers(layers);
  if (ws_generation_ != generation) return logits.slice_rows(0, S);
  try {
    if (graphs_.size() >= kMaxGraphs) {
      be_.drop_graph(graphs_.front().handle);
      graphs_.erase(graphs_.begin());
    }
    be_.begin_capture();
    run_layers(layers);
    graphs_.push_back({key, be_.end_capture(), logits});
  } catch (const std::exception& e) {
    be_.abort_capture();
    spdlog::warn(
        "CUDA graph capture of the batch-{} decode step failed, decoding eagerly from now on: {}",
        B, e.what());
    set_graphs(false);
  }
  return logits.slice_rows(0, S);
}

}  // namespace macserve::backend
