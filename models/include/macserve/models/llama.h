// LlamaModel: the one decoder implementation behind LlamaForCausalLM, Qwen2ForCausalLM and
// Qwen3ForCausalLM. Weights live on the backend; activations in a workspace that grows to the
// largest step seen.
#pragma once

#include <vector>

#include "macserve/models/model.h"

namespace macserve::models {

class LlamaModel final : public Model {
 public:
  LlamaModel(Checkpoint ckpt, backend::Backend& backend);
  const ModelConfig& config() const override { return config_; }
  Tensor forward(const StepInputs& inputs, const KvCacheView& kv, MacStepOutputs* mac_out = nullptr) override;
  void read_mac_outputs(MacStepOutputs& out) override;
  int64_t weight_bytes() const override;
  void set_graphs(bool enabled) override;
  ~LlamaModel() override;

 private:
  struct Layer {
    Tensor input_norm, post_attn_norm;  // [hidden]
    Tensor wq, wk, wv, wo;              // [q_size|kv_size, hidden], wo [hidden, q_size]
    Tensor bq, bk, bv;                  // Qwen2 only
    Tensor q_norm, k_norm;              // [head_dim], Qwen3 only
    Tensor w_gate_up;                   // [2 * intermediate, hidden]: gate rows then up rows
    Tensor w_down;                      // [hidden, intermediate]
  };

  Tensor fuse_gate_up(const Tensor& gate, const Tensor& up);
  void validate(const StepInputs& in, const KvCacheView& kv) const;
  void ensure_workspace(int64_t num_tokens, int64_t num_logits, int64_t mac_seqs = 0);
  void upload_inputs(const StepInputs& in);
  // Embedding -> layers -> logits of the uploaded step (no host copies: graph-capturable).
  Tensor run_layers(const StepInputs& in, const KvCacheView& kv);
  // A pure decode step padded to its batch bucket and replayed from a graph (nullopt: not eligible).
  bool graph_eligible(const StepInputs& in) const;
  Tensor forward_graph(const StepInputs& in, const KvCacheView& kv);
  void drop_graphs();
  void attention(int64_t layer, const StepInputs& in, const KvCacheView& kv, const Tensor& q, const Tensor& attn);
  // Byte offsets of the MAC telemetry of a step with `rows` sequence rows (see mac_tel_).
  struct MacTelemetryLayout {
    int64_t decisions = 0, kv_tokens_read = 0, audit = 0, bytes = 0;
  };
  MacTelemetryLayout mac_layout(int64_t rows) const;
  void fetch_mac_outputs(const StepInputs& in);

  ModelConfig config_;
  backend::Backend& be_;
  Tensor embed_, final_norm_, lm_head_, inv_freq_;
  std::vector<Layer> layers_;

  // Workspace, sized for the largest step so far.
  int64_t ws_tokens_ = 0, ws_logits_ = 0;
  Tensor residual_, normed_, q_, k_, v_, attn_, proj_, gate_up_, act_, ids_;
  Tensor q_pre_, audit_;  // MAC: pre-RoPE queries; exact attention for the audit
  Tensor last_hidden_, logits_, logits_rows_;
  backend::AttentionMeta meta_;       // backing storage
  backend::AttentionMeta step_meta_;  // views for the current step
  int64_t ws_generation_ = 0;         // bumped whenever a workspace or meta buffer moves

  // MAC per step: per-sequence inputs on the backend, and the telemetry of a step with R sequence
  // rows (R = num_seqs, or the batch bucket of a graph step) in one buffer, so that it reaches the
  // host in one copy: decisions [layers, R, Hq], kv_tokens_read [layers, R] i64, audit sums
  // [layers, 2] f64 (each part 256-byte aligned). mac_host_ is its page-locked host mirror.
  Tensor mac_modes_, mac_slots_, mac_valid_from_, mac_rows_from_;  // backing storage
  Tensor mac_modes_view_, mac_slots_view_, mac_valid_from_view_, mac_rows_from_view_;  // this step
  int64_t mac_num_decode_ = 0;  // decode sequences of the uploaded step (R in a graph step)
  int64_t mac_rows_ = 0;        // R of the uploaded step
  int64_t mac_rows_cap_ = 0;    // R the telemetry buffer holds
  Tensor mac_tel_;              // u8
  std::vector<uint8_t> mac_host_;
  struct PendingMac {           // what read_mac_outputs unpacks
    bool valid = false;
    int64_t rows = 0;
    int64_t num_seqs = 0;
    std::vector<int8_t> modes;
    std::vector<int32_t> context_lens;
    bool audit = false;
  } pending_mac_;

  // Decode graphs: key (batch bucket, block-table width bucket, MAC) -> backend graph handle, valid
  // while the workspace generation is the one they were captured with.
  bool graphs_enabled_ = false;
  int64_t graphs_generation_ = -1;
  struct GraphKey {
    int64_t batch = 0, width = 0;
    bool mac = false;
    bool operator==(const GraphKey&) const = default;
  };
  std::vector<std::pair<GraphKey, int64_t>> graphs_;
  StepInputs padded_;
};

}  // namespace macserve::models
