// Runs a Model directly (no engine) over a paged KV cache with a shuffled block table, so model
// tests exercise the same paged attention the engine uses.
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/backend/communicator.h"
#include "macserve/models/loader/checkpoint.h"
#include "macserve/models/model.h"
#include "macserve/models/shard.h"

namespace macserve::testing {

class ModelHarness {
 public:
  // keep_quantized: GGUF Q8_0/Q4_0/Q4_1 weights stay in their blocks (`--cpu-weights native`).
  explicit ModelHarness(const std::string& path, int64_t max_tokens = 512, int64_t block_size = 16,
                        uint64_t shuffle_seed = 7, bool keep_quantized = false)
      : ModelHarness(models::load_checkpoint(path, models::LoadFormat::kAuto, 0, keep_quantized), 1,
                     max_tokens, block_size, shuffle_seed) {}

  // Tensor parallel over `tp_size` ranks when > 1: one CPU backend, model shard and KV shard per
  // rank, an in-process communicator group, and each step run on one thread per rank (1 OpenMP
  // thread each); the logits returned are rank 0's.
  ModelHarness(models::Checkpoint ckpt, int tp_size, int64_t max_tokens = 512,
               int64_t block_size = 16, uint64_t shuffle_seed = 7) {
    vocab_ = ckpt.gguf_vocab;
    if (tp_size > 1) comms_ = backend::make_cpu_communicators(tp_size);
    const int64_t num_blocks = (max_tokens + block_size - 1) / block_size + 3;
    for (int r = 0; r < tp_size; ++r) {
      backends_.push_back(backend::make_cpu_backend());
      const models::Shard shard{r, tp_size, tp_size > 1 ? comms_[r].get() : nullptr};
      models_.push_back(
          models::create_model(tp_size > 1 ? ckpt : std::move(ckpt), *backends_[r], shard));
      const ModelConfig& full = models_[r]->config();
      const ModelConfig c = models::shard_config(full, models::shard_layout(full, r, tp_size));
      models::KvCacheView& kv = kv_.emplace_back();
      kv.layout = {num_blocks, c.num_kv_heads, block_size, c.head_dim};
      for (int64_t i = 0; i < c.num_layers; ++i) {
        kv.k.push_back(
            backends_[r]->alloc(DType::kF32, {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
        kv.v.push_back(
            backends_[r]->alloc(DType::kF32, {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
      }
    }
    for (int32_t b = 0; b < num_blocks; ++b) table_.push_back(b);
    std::shuffle(table_.begin(), table_.end(), std::mt19937(shuffle_seed));
  }

  const ModelConfig& config() const { return models_[0]->config(); }
  int64_t weight_bytes() const { return models_[0]->weight_bytes(); }
  // Set by a tensor-parallel run: whether every rank returned the same logits, bit for bit.
  bool ranks_agree() const { return ranks_agree_; }
  // The tokenizer a GGUF file carries (empty for HF directories).
  const std::optional<VocabData>& gguf_vocab() const { return vocab_; }

  // Feeds `ids` at positions [start, start + n) as one chunk; returns logits of every position.
  std::vector<std::vector<float>> run(const std::vector<int32_t>& ids, int64_t start) {
    models::StepInputs in;
    const int64_t bs = kv_[0].layout.block_size;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const int64_t pos = start + static_cast<int64_t>(i);
      in.token_ids.push_back(ids[i]);
      in.positions.push_back(static_cast<int32_t>(pos));
      in.slot_mapping.push_back(static_cast<int64_t>(table_[pos / bs]) * bs + pos % bs);
      in.logits_rows.push_back(static_cast<int32_t>(i));
    }
    in.query_start = {0, static_cast<int32_t>(ids.size())};
    in.context_lens = {static_cast<int32_t>(start + static_cast<int64_t>(ids.size()))};
    in.max_blocks_per_seq = static_cast<int64_t>(table_.size());
    in.block_tables = table_;
    Tensor logits = forward(in);
    const int64_t vocab = logits.dim(1);
    std::vector<std::vector<float>> rows;
    for (int64_t r = 0; r < logits.dim(0); ++r)
      rows.emplace_back(logits.data_as<float>() + r * vocab,
                        logits.data_as<float>() + (r + 1) * vocab);
    return rows;
  }

  // Prefill in chunks of `chunk` tokens (0 = all at once); returns the logits of every position.
  std::vector<std::vector<float>> prefill(const std::vector<int32_t>& ids, int64_t chunk = 0) {
    std::vector<std::vector<float>> all;
    const int64_t n = static_cast<int64_t>(ids.size());
    const int64_t step = chunk > 0 ? chunk : n;
    for (int64_t s = 0; s < n; s += step) {
      std::vector<int32_t> part(ids.begin() + s, ids.begin() + std::min(n, s + step));
      auto rows = run(part, s);
      all.insert(all.end(), rows.begin(), rows.end());
    }
    return all;
  }

  // Greedy continuation of `prompt` for `n` tokens; logits of each step go to `step_logits`.
  std::vector<int32_t> greedy(const std::vector<int32_t>& prompt, int n,
                              std::vector<std::vector<float>>* step_logits = nullptr,
                              int32_t eos = -1) {
    auto rows = prefill(prompt);
    std::vector<float> last = rows.back();
    std::vector<int32_t> out;
    int64_t pos = static_cast<int64_t>(prompt.size());
    for (int i = 0; i < n; ++i) {
      if (step_logits) step_logits->push_back(last);
      const int32_t tok =
          static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
      out.push_back(tok);
      if (tok == eos) break;
      if (i + 1 < n) last = run({tok}, pos++)[0];
    }
    return out;
  }

 private:
  Tensor forward(const models::StepInputs& in) {
    if (models_.size() == 1) return models_[0]->forward(in, kv_[0]);
    std::vector<Tensor> logits(models_.size());
    std::vector<std::exception_ptr> errors(models_.size());
    std::vector<std::thread> ranks;
    for (std::size_t r = 0; r < models_.size(); ++r)
      ranks.emplace_back([&, r] {
        omp_set_num_threads(1);
        try {
          logits[r] = models_[r]->forward(in, kv_[r]);
        } catch (const std::exception& e) {
          errors[r] = std::current_exception();
          comms_[r]->abort(e.what());
        }
      });
    for (std::thread& t : ranks) t.join();
    for (const std::exception_ptr& e : errors)
      if (e) std::rethrow_exception(e);
    ranks_agree_ = true;
    for (const Tensor& l : logits)
      ranks_agree_ = ranks_agree_ && l.nbytes() == logits[0].nbytes() &&
                     std::memcmp(l.data(), logits[0].data(), l.nbytes()) == 0;
    return logits[0];
  }

  std::vector<std::unique_ptr<backend::Communicator>> comms_;
  std::vector<std::unique_ptr<backend::Backend>> backends_;
  std::vector<std::unique_ptr<models::Model>> models_;
  std::vector<models::KvCacheView> kv_;
  bool ranks_agree_ = true;
  std::vector<int32_t> table_;
  std::optional<VocabData> vocab_;
};

inline double max_abs_diff(const std::vector<float>& a, const std::vector<double>& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return a.size() == b.size() ? m : 1e30;
}

}  // namespace macserve::testing
