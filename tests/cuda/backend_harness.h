// Runs a Model on any backend (CPU or CUDA) without the engine: each sequence owns a shuffled run of
// KV blocks; a step takes chunks of several sequences at once (batched prefill + decode).
#pragma once

#include <algorithm>
#include <memory>
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
  };

  BackendHarness(const std::string& path, backend::Backend& be, int num_seqs = 4, int64_t max_tokens = 512,
                 int64_t block_size = 16, uint64_t shuffle_seed = 7)
      : be_(be) {
    model_ = models::create_model(models::load_checkpoint(path), be_);
    const ModelConfig& c = model_->config();
    blocks_per_seq_ = (max_tokens + block_size - 1) / block_size;
    const int64_t num_blocks = blocks_per_seq_ * num_seqs + 3;
    kv_.layout = {num_blocks, c.num_kv_heads, block_size, c.head_dim};
    for (int64_t i = 0; i < c.num_layers; ++i) {
      kv_.k.push_back(be_.alloc(be_.kv_dtype(), {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
      kv_.v.push_back(be_.alloc(be_.kv_dtype(), {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
    }
    for (int32_t b = 0; b < num_blocks; ++b) table_.push_back(b);
    std::shuffle(table_.begin(), table_.end(), std::mt19937(shuffle_seed));
  }

  const ModelConfig& config() const { return model_->config(); }
  models::Model& model() { return *model_; }

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
        in.logits_rows.push_back(static_cast<int32_t>(in.token_ids.size()) - 1);
      }
      in.query_start.push_back(static_cast<int32_t>(in.token_ids.size()));
      in.context_lens.push_back(static_cast<int32_t>(ch.start + static_cast<int64_t>(ch.ids.size())));
      in.block_tables.insert(in.block_tables.end(), table, table + blocks_per_seq_);
    }
    Tensor logits = model_->forward(in, kv_);
    const int64_t vocab = logits.dim(1);
    std::vector<float> flat(static_cast<std::size_t>(logits.numel()));
    be_.copy_to_host(logits, flat.data());
    std::vector<std::vector<float>> rows;
    for (int64_t r = 0; r < logits.dim(0); ++r) rows.emplace_back(flat.begin() + r * vocab, flat.begin() + (r + 1) * vocab);
    return rows;
  }

  // Greedy continuation of one sequence; step_logits gets the logits each token was chosen from.
  std::vector<int32_t> greedy(int seq, const std::vector<int32_t>& prompt, int n,
                              std::vector<std::vector<float>>* step_logits = nullptr, int32_t eos = -1) {
    std::vector<float> last = step({{seq, prompt, 0}}).back();
    std::vector<int32_t> out;
    int64_t pos = static_cast<int64_t>(prompt.size());
    for (int i = 0; i < n; ++i) {
      if (step_logits) step_logits->push_back(last);
      const int32_t tok = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
      out.push_back(tok);
      if (tok == eos) break;
      if (i + 1 < n) last = step({{seq, {tok}, pos++}})[0];
    }
    return out;
  }

 private:
  backend::Backend& be_;
  std::unique_ptr<models::Model> model_;
  models::KvCacheView kv_;
  std::vector<int32_t> table_;
  int64_t blocks_per_seq_ = 0;
};

}  // namespace macserve::testing
