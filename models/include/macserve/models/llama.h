// LlamaModel: the one decoder implementation behind LlamaForCausalLM, Qwen2ForCausalLM and
// Qwen3ForCausalLM. Weights live on the backend; activations in workspace buffers the step
// executor grows to the largest step seen. Under tensor parallelism it is one rank's slice
// (shard.h): the same forward on its heads, MLP rows and vocabulary rows, with an all-reduce after
// each row-parallel layer and the logits slices gathered.
#pragma once

#include <vector>

#include "macserve/models/model.h"

namespace macserve::models {

class LlamaModel final : public Model {
 public:
  LlamaModel(Checkpoint ckpt, backend::Backend& backend, const Shard& shard = {});
  const ModelConfig& config() const override { return config_; }
  int64_t weight_bytes() const override;

 private:
  struct Layer {
    Tensor input_norm, post_attn_norm;  // [hidden]
    // Sizes are this rank's (local_): all of them without tensor parallelism.
    Tensor w_qkv;           // [q_size + 2 * kv_size, hidden]: q, k, then v rows
    Tensor b_qkv;           // [q_size + 2 * kv_size], Qwen2 only
    Tensor wo;              // [hidden, q_size]
    Tensor q_norm, k_norm;  // [head_dim], Qwen3 only (shared by the heads: every rank has them)
    Tensor w_gate_up;       // [2 * intermediate, hidden]: gate rows then up rows
    Tensor w_down;          // [hidden, intermediate]
  };
  // Workspace buffer ids (DeviceStep::buffer): per token, then per logits row.
  struct Buffers {
    int residual, normed, qkv, q, attn, proj, gate_up, act;  // q: rotated, out of qkv
    int q_pre, audit;  // MAC: pre-RoPE queries; exact attention for the audit
    int last_hidden, logits;
    int logits_slice;  // tensor parallelism: this rank's vocabulary columns, before the gather
  };

  Tensor fuse_rows(const std::vector<Tensor>& parts);
  // This rank's Q/K/V rows (or biases): its q heads, then its KV heads of k and of v.
  std::vector<Tensor> qkv_slices(Checkpoint& ckpt, const std::string& prefix,
                                 const std::string& suffix) const;
  void load_layer(Checkpoint& ckpt, int64_t i);
  void all_reduce(const Tensor& x) const;
  void declare_buffers();
  Tensor run_layers(const backend::DeviceStep& step, const KvCacheView& kv) override;
  void attention(int64_t layer, const backend::DeviceStep& step, const KvCacheView& kv,
                 const Tensor& q, const Tensor& attn);

  ModelConfig config_;  // the whole model's
  Shard shard_;
  ShardLayout layout_;
  ModelConfig local_;  // the shapes this rank runs (shard_config)
  backend::Backend& be_;
  Tensor embed_, final_norm_, lm_head_, inv_freq_;  // embed_, lm_head_: [vocab slice, hidden]
  std::vector<Layer> layers_;
  Buffers buf_{};
};

}  // namespace macserve::models
