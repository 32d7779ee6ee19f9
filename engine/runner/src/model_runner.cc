#include "macserve/runner/model_runner.h"

#include <algorithm>

namespace macserve::engine {

models::StepInputs ModelRunner::prepare(const SchedulerOutput& batch) const {
  models::StepInputs in;
  const int64_t block_size = kv_.view().layout.block_size;
  for (const ScheduledSeq& s : batch.seqs)
    in.max_blocks_per_seq = std::max<int64_t>(in.max_blocks_per_seq, static_cast<int64_t>(s.seq->block_table.size()));
  in.query_start.push_back(0);
  for (const ScheduledSeq& s : batch.seqs) {
    const Sequence& seq = *s.seq;
    for (int64_t pos = seq.num_computed; pos < seq.num_computed + s.num_new_tokens; ++pos) {
      in.token_ids.push_back(seq.tokens[static_cast<std::size_t>(pos)]);
      in.positions.push_back(static_cast<int32_t>(pos));
      const int32_t block = seq.block_table[static_cast<std::size_t>(pos / block_size)];
      in.slot_mapping.push_back(static_cast<int64_t>(block) * block_size + pos % block_size);
    }
    in.query_start.push_back(static_cast<int32_t>(in.token_ids.size()));
    in.context_lens.push_back(static_cast<int32_t>(seq.num_computed + s.num_new_tokens));
    std::vector<int32_t> row = seq.block_table;
    row.resize(static_cast<std::size_t>(in.max_blocks_per_seq), 0);
    in.block_tables.insert(in.block_tables.end(), row.begin(), row.end());
    if (s.sample) in.logits_rows.push_back(static_cast<int32_t>(in.token_ids.size()) - 1);
  }
  return in;
}

const std::vector<float>& ModelRunner::run(const SchedulerOutput& batch) {
  kv_.copy_blocks(batch.copies);
  const models::StepInputs in = prepare(batch);
  Tensor logits = model_.forward(in, kv_.view());
  logits_.resize(static_cast<std::size_t>(logits.numel()));
  if (logits.numel() > 0) backend_.copy_to_host(logits, logits_.data());
  return logits_;
}

}  // namespace macserve::engine
