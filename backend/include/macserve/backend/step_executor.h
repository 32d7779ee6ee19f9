// StepExecutor: the device side of a model step, the same for every model family, so that a model
// is only its forward math over a DeviceStep. It uploads the step's host arrays (block tables,
// positions, MAC per-sequence state) into AttentionMeta and backend tensors, keeps the activation
// workspace the model declares (grown to the largest step, with a generation counter), holds the
// MAC telemetry buffer and its one async copy into a page-locked mirror, and replays pure decode
// steps from graphs captured per (batch bucket, block-table width bucket, MAC) where the backend
// has graphs (CUDA).
#pragma once

#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/backend/kv_cache_view.h"
#include "macserve/backend/step_arrays.h"
#include "macserve/core/tensor.h"
#include "macserve/kernels/mac_attention.h"

namespace macserve::backend {

// ---- one step on the backend: what the model's layers read ------------------------------------

// Valid during StepExecutor::run's call of the layers. In a graph step every size is the batch
// bucket's (padding rows included) and every pointer is fixed per graph key.
struct DeviceStep {
  int64_t num_tokens = 0;  // T
  int64_t num_logits = 0;  // rows whose logits are wanted
  Tensor token_ids;        // [T] i32
  Tensor logits_rows;      // [num_logits] i32: token rows to gather before the lm_head
  AttentionMeta meta;
  // The model's workspace buffers (StepExecutor::add_buffer), sliced to T or num_logits rows.
  std::vector<Tensor> buffers;
  const Tensor& buffer(int id) const { return buffers[static_cast<std::size_t>(id)]; }

  // MAC: per-sequence state and where each layer's telemetry goes (rows R = num_seqs, or the
  // bucket of a graph step).
  bool mac = false;
  bool mac_audit = false;
  kernels::MacConfig mac_config;
  Tensor mac_modes, mac_ring_slots, mac_ring_valid_from, mac_rows_from;  // [num_seqs] u8/i32
  int64_t mac_num_decode = 0;
  int64_t mac_rows = 0;
  int64_t num_q_heads = 0;
  kernels::MacHeadDecision* mac_decisions = nullptr;  // [layers, R, Hq]
  int64_t* mac_kv_tokens_read = nullptr;              // [layers, R]
  double* mac_audit_sums = nullptr;                   // [layers, 2]
  // Backend::mac_attention's arguments for one layer; `audit_exact` (shaped as q, f32) receives the
  // exact attention when the step is audited.
  Backend::MacArgs mac_args(int64_t layer, const kernels::MacRing& ring,
                            const Tensor& audit_exact) const;
};

// ---- the executor ------------------------------------------------------------------------------

class StepExecutor {
 public:
  struct Shape {
    int64_t num_layers = 0, num_q_heads = 0, num_kv_heads = 0;
  };
  // Graphs are on wherever the backend supports them.
  StepExecutor(Backend& be, Shape shape);
  ~StepExecutor();
  StepExecutor(const StepExecutor&) = delete;
  StepExecutor& operator=(const StepExecutor&) = delete;

  // A workspace buffer of `row_shape` per token of the step (kTokens) or per logits row (kLogits),
  // grown with the largest step; returns its id for DeviceStep::buffer. Declared once, up front.
  enum class Rows { kTokens, kLogits };
  int add_buffer(Rows rows, DType dtype, std::vector<int64_t> row_shape);

  // The layers of a model over an uploaded step: returns the logits [num_logits, vocab] f32, which
  // must be a workspace buffer (a graph replay returns the same memory). No host copies, no
  // allocation: a graph step captures them.
  using Layers = std::function<Tensor(const DeviceStep&)>;
  // Validates and uploads `in`, runs `layers` (or replays its graph) and returns the logits of
  // in.logits_rows (valid until the next run). With in.mac and `want_mac_outputs`, the telemetry's
  // one device-to-host copy is enqueued before returning (so the logits copy covers it).
  Tensor run(const StepArrays& in, const KvCacheView& kv, bool want_mac_outputs,
             const Layers& layers);
  // The MAC telemetry of the last run that wanted it. Call once that step's device work is complete
  // (its logits were copied to the host, or after Backend::synchronize) and before the next run.
  void read_mac_outputs(MacStepOutputs& out) const;

  // Pure decode steps replayed from graphs (no-op where the backend has none); off drops them.
  void set_graphs(bool enabled);

 private:
  struct Buffer {
    Rows rows;
    DType dtype;
    std::vector<int64_t> row_shape;
    Tensor storage;
  };
  // Byte offsets of the MAC telemetry of a step with `rows` sequence rows (see mac_tel_).
  struct MacTelemetryLayout {
    int64_t decisions = 0, kv_tokens_read = 0, audit = 0, bytes = 0;
  };
  struct GraphKey {
    int64_t batch = 0, width = 0;
    bool mac = false, mac_decode = false, mac_plain = false;
    bool operator==(const GraphKey&) const = default;
  };
  struct Graph {
    GraphKey key;
    int64_t handle = 0;
    Tensor logits;  // [bucket, vocab]: what a replay writes
  };
  // A decode step padded to a graph bucket (host arrays owned here; see pad()).
  struct PaddedStep {
    std::vector<int32_t> token_ids, positions, query_start, context_lens, block_tables, logits_rows;
    std::vector<int64_t> slot_mapping;
    std::vector<int8_t> mac_modes;
    std::vector<int32_t> mac_ring_slots, mac_ring_valid_from, mac_rows_from;
    StepArrays arrays;
  };

  void validate(const StepArrays& in, const KvCacheView& kv) const;
  void ensure_workspace(int64_t num_tokens, int64_t num_logits, int64_t mac_seqs);
  void upload(const StepArrays& in);
  Tensor run_layers(const Layers& layers);
  MacTelemetryLayout mac_layout(int64_t rows) const;
  void fetch_mac_outputs(const StepArrays& in);
  bool graph_eligible(const StepArrays& in) const;
  const StepArrays& pad(const StepArrays& in, int64_t bucket, int64_t width);
  Tensor run_graph(const StepArrays& in, const KvCacheView& kv, const Layers& layers);
  void drop_graphs();

  Backend& be_;
  Shape shape_;

  // Workspace, sized for the largest step so far.
  int64_t ws_tokens_ = 0, ws_logits_ = 0;
  std::vector<Buffer> buffers_;
  Tensor ids_, logits_rows_;
  AttentionMeta meta_;         // backing storage
  DeviceStep step_;            // views for the current step
  int64_t ws_generation_ = 0;  // bumped whenever a workspace or meta buffer moves

  // MAC per step: per-sequence inputs on the backend, and the telemetry of a step with R sequence
  // rows (R = num_seqs, or the batch bucket of a graph step) in one buffer, so that it reaches the
  // host in one copy: decisions [layers, R, Hq], kv_tokens_read [layers, R] i64, audit sums
  // [layers, 2] f64 (each part 256-byte aligned). mac_host_ is its page-locked host mirror.
  Tensor mac_modes_, mac_slots_, mac_valid_from_, mac_rows_from_;  // backing storage
  int64_t mac_rows_cap_ = 0;                                       // R the telemetry buffer holds
  Tensor mac_tel_;                                                 // u8
  std::vector<uint8_t> mac_host_;
  struct PendingMac {  // what read_mac_outputs unpacks
    bool valid = false;
    int64_t rows = 0;
    int64_t num_seqs = 0;
    std::vector<int8_t> modes;
    std::vector<int32_t> context_lens;
    bool audit = false;
  } pending_mac_;

  // Decode graphs, valid while the workspace generation is the one they were captured with.
  bool graphs_enabled_ = false;
  int64_t graphs_generation_ = -1;
  std::vector<Graph> graphs_;
  PaddedStep padded_;
};

}  // namespace macserve::backend
