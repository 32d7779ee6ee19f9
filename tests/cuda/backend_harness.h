// Runs a Model on any backend (CPU or CUDA) without the engine: each sequence owns a shuffled run
// of KV blocks; a step takes chunks of several sequences at once (batched prefill + decode). With
// enable_mac, attention goes through MAC-Attention (ring slot = sequence index; rows and candidates
// from set_mac_prompt_len's start, else 0) and each step's telemetry is read back like the model
// runner does.
#pragma once

#include <algorithm>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/models/loader/checkpoint.h"
#include "macserve/models/model.h"

namespace macserve::testing {

class BackendHarness {
 public:
  struct Chunk {
    int seq;
    std::vector<int32_t> ids;
    int64_t start;  // position of ids[0]
    bool decode =
        false;  // MAC: this one token is a decode step (else the chunk runs exact attention)
  };

  BackendHarness(const std::string& path, backend::Backend& be, int num_seqs = 4,
                 int64_t max_tokens = 512, int64_t block_size = 16, uint64_t shuffle_seed = 7)
      : be_(be), num_seqs_(num_seqs) {
    models::Checkpoint ckpt = models::load_checkpoint(path);
    vocab_ = ckpt.gguf_vocab;
    model_ = models::create_model(std::move(ckpt), be_);
    const ModelConfig& c = model_->config();
    blocks_per_seq_ = (max_tokens + block_size - 1) / block_size;
    const int64_t num_blocks = blocks_per_seq_ * num_seqs + 3;
    kv_.layout = {num_blocks, c.num_kv_heads, block_size, c.head_dim};
    for (int64_t i = 0; i < c.num_layers; ++i) {
      kv_.k.push_back(
          be_.alloc(be_.kv_dtype(), {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
      kv_.v.push_back(
          be_.alloc(be_.kv_dtype(), {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
    }
    for (int32_t b = 0; b < num_blocks; ++b) table_.push_back(b);
    std::shuffle(table_.begin(), table_.end(), std::mt19937(shuffle_seed));
  }

  const ModelConfig& config() const { return model_->config(); }
  models::Model& model() { return *model_; }
  backend::Backend& backend() { return be_; }
  const models::KvCacheView& kv() const { return kv_; }
  const std::optional<VocabData>& gguf_vocab() const { return vocab_; }

  // MAC-Attention from now on: one ring per layer with a slot per sequence.
  void enable_mac(const kernels::MacConfig& cfg) {
    const ModelConfig& c = model_->config();
    mac_ = cfg;
    for (int64_t i = 0; i < c.num_layers; ++i)
      kv_.mac_rings.push_back(
          be_.alloc_mac_ring(num_seqs_, cfg.window, c.num_q_heads, c.head_dim, cfg.ring_bf16));
  }
  void set_mac_audit(bool on) { mac_audit_ = on; }
  // As the scheduler does at admission: rows (and match candidates) of `seq` start at
  // max(0, prompt_len - M), the rows its prefill builds.
  void set_mac_prompt_len(int seq, int64_t prompt_len) {
    mac_valid_from_.resize(static_cast<std::size_t>(num_seqs_), 0);
    mac_valid_from_[static_cast<std::size_t>(seq)] =
        static_cast<int32_t>(std::max<int64_t>(0, prompt_len - mac_->window));
  }
  int64_t ring_window() const { return mac_ ? mac_->window : 0; }
  // Decisions [layers, seqs of the last step, Hq], KV tokens read, audit sums of the last step.
  const models::MacStepOutputs& mac_outputs() const { return mac_out_; }
  // Only the last row of each chunk gets logits (long prompts: the lm_head over every row is
  // waste).
  void set_last_logits_only(bool on) { last_only_ = on; }

  // One forward over the chunks; returns the logits of every token of every chunk, in order.
  std::vector<std::vector<float>> step(const std::vector<Chunk>& chunks) {
    models::StepInputs in;
    const int64_t bs = kv_.layout.block_size;
    in.max_blocks_per_seq = blocks_per_seq_;
    in.query_start.push_back(0);
    for (const Chunk& ch : chunks) {
      const int32_t* table = table_.data() + ch.seq * blocks_per_seq_;
      for (std::size_t i = 0; i < ch.ids.size(); ++i) {
        const int64_t pos = ch.start + static_cast<int64_t>(i);
        in.token_ids.push_back(ch.ids[i]);
        in.positions.push_back(static_cast<int32_t>(pos));
        in.slot_mapping.push_back(static_cast<int64_t>(table[pos / bs]) * bs + pos % bs);
        if (!last_only_ || i + 1 == ch.ids.size())
          in.logits_rows.push_back(static_cast<int32_t>(in.token_ids.size()) - 1);
      }
      in.query_start.push_back(static_cast<int32_t>(in.token_ids.size()));
      if (mac_) {
        in.mac.modes.push_back(ch.decode ? kernels::kMacDecode : kernels::kMacExact);
        in.mac.ring_slots.push_back(ch.seq);
        const int32_t from =
            static_cast<std::size_t>(ch.seq) < mac_valid_from_.size() ? mac_valid_from_[ch.seq] : 0;
        in.mac.ring_valid_from.push_back(from);
        in.mac.rows_from.push_back(from);
      }
      in.context_lens.push_back(
          static_cast<int32_t>(ch.start + static_cast<int64_t>(ch.ids.size())));
      in.block_tables.insert(in.block_tables.end(), table, table + blocks_per_seq_);
    }
    if (mac_) {
      in.mac.enabled = true;
      in.mac.config = *mac_;
      in.mac.audit = mac_audit_;
    }
    Tensor logits = model_->forward(in, kv_, mac_ ? &mac_out_ : nullptr);
    const int64_t vocab = logits.dim(1);
    std::vector<float> flat(static_cast<std::size_t>(logits.numel()));
    be_.copy_to_host(logits, flat.data());
    if (mac_) model_->read_mac_outputs(mac_out_);
    std::vector<std::vector<float>> rows;
    for (int64_t r = 0; r < logits.dim(0); ++r)
      rows.emplace_back(flat.begin() + r * vocab, flat.begin() + (r + 1) * vocab);
    return rows;
  }

  // Greedy continuation of one sequence; step_logits gets the logits each token was chosen from.
  std::vector<int32_t> greedy(int seq, const std::vector<int32_t>& prompt, int n,
                              std::vector<std::vector<float>>* step_logits = nullptr,
                              int32_t eos = -1) {
    std::vector<float> last = step({{seq, prompt, 0}}).back();
    std::vector<int32_t> out;
    int64_t pos = static_cast<int64_t>(prompt.size());
    for (int i = 0; i < n; ++i) {
      if (step_logits) step_logits->push_back(last);
      const int32_t tok =
          static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
      out.push_back(tok);
      if (tok == eos) break;
      if (i + 1 < n) last = step({{seq, {tok}, pos++, mac_.has_value()}})[0];
    }
    return out;
  }

 private:
  backend::Backend& be_;
  int num_seqs_;
  std::unique_ptr<models::Model> model_;
  models::KvCacheView kv_;
  std::vector<int32_t> table_;
  int64_t blocks_per_seq_ = 0;
  std::optional<VocabData> vocab_;
  std::optional<kernels::MacConfig> mac_;
  bool mac_audit_ = false;
  std::vector<int32_t> mac_valid_from_;  // per sequence
  bool last_only_ = false;
  models::MacStepOutputs mac_out_;
};

}  // namespace macserve::testing
