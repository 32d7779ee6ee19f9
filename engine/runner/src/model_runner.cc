#include "macserve/runner/model_runner.h"

#include <algorithm>
#include <cmath>

#include "macserve/core/error.h"

namespace macserve::engine {

ModelRunner::ModelRunner(backend::Backend& backend, models::Model& model, cache::KvPool& kv, MacRunnerOptions mac)
    : backend_(backend), model_(model), kv_(kv), mac_(std::move(mac)), audit_rng_(mac_.audit_seed) {
  const auto layers = static_cast<std::size_t>(model.config().num_layers);
  totals_.layer_heads.assign(layers, 0);
  totals_.layer_eligible.assign(layers, 0);
  totals_.layer_hits.assign(layers, 0);
  totals_.layer_audit_err_sq.assign(layers, 0.0);
  totals_.layer_audit_ref_sq.assign(layers, 0.0);
  if (!mac_.dump_path.empty()) {
    dump_ = std::fopen(mac_.dump_path.c_str(), "w");
    if (dump_ == nullptr) throw_error(ErrorCode::kInvalidArgument, "cannot write the MAC dump to {}", mac_.dump_path);
  }
}

ModelRunner::~ModelRunner() {
  if (dump_ != nullptr) std::fclose(dump_);
  if (logits_pinned_ != nullptr) backend_.unregister_host_buffer(logits_pinned_);
}

models::StepInputs ModelRunner::prepare(const SchedulerOutput& batch) const {
  models::StepInputs in;
  const int64_t block_size = kv_.view().layout.block_size;
  for (const ScheduledSeq& s : batch.seqs)
    in.max_blocks_per_seq = std::max<int64_t>(in.max_blocks_per_seq, static_cast<int64_t>(s.seq->block_table.size()));
  in.query_start.push_back(0);
  in.mac.enabled = mac_.enabled;
  in.mac.config = mac_.config;
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
    if (mac_.enabled) {
      // A decode is one new token after this admission's prefill; anything else is exact.
      const bool decode = s.num_new_tokens == 1 && seq.num_computed >= seq.prefill_end;
      in.mac.modes.push_back(decode ? kernels::kMacDecode : kernels::kMacExact);
      in.mac.ring_slots.push_back(seq.ring_slot);
      in.mac.ring_valid_from.push_back(static_cast<int32_t>(seq.ring_valid_from));
      in.mac.rows_from.push_back(static_cast<int32_t>(seq.ring_valid_from));
    }
  }
  return in;
}

const std::vector<float>& ModelRunner::run(const SchedulerOutput& batch) {
  kv_.copy_blocks(batch.copies);
  models::StepInputs in = prepare(batch);
  models::MacStepOutputs mac_out;
  if (mac_.enabled && mac_.audit_rate > 0.0)
    in.mac.audit = std::uniform_real_distribution<double>(0.0, 1.0)(audit_rng_) < mac_.audit_rate;
  Tensor logits = model_.forward(in, kv_.view(), mac_.enabled ? &mac_out : nullptr);
  const auto n = static_cast<std::size_t>(logits.numel());
  if (n > logits_.capacity() && logits_pinned_ != nullptr) {  // about to move: unpin first
    backend_.unregister_host_buffer(logits_pinned_);
    logits_pinned_ = nullptr;
  }
  logits_.resize(n);
  if (logits_pinned_ == nullptr && logits_.capacity() * sizeof(float) >= (std::size_t{1} << 20)) {
    // Large logits (big batches): page-lock the buffer so the device copies straight into it.
    logits_pinned_ = logits_.data();
    backend_.register_host_buffer(logits_pinned_, logits_.capacity() * sizeof(float));
  }
  if (logits.numel() > 0) backend_.copy_to_host(logits, logits_.data());
  if (mac_.enabled) {
    // The telemetry's device -> host copy was enqueued before the logits copy, which synchronised
    // it; a step without logits (a prefill chunk that samples nothing) synchronises here.
    if (logits.numel() == 0) backend_.synchronize();
    model_.read_mac_outputs(mac_out);
    account_mac(batch, in, mac_out);
    if (dump_ != nullptr) dump_mac(batch, in, mac_out);
  }
  return logits_;
}

void ModelRunner::account_mac(const SchedulerOutput& batch, const models::StepInputs& in,
                              const models::MacStepOutputs& out) {
  const ModelConfig& c = model_.config();
  const int64_t S = in.num_seqs(), Hq = c.num_q_heads;
  const int64_t kv_token_bytes = 2 * c.head_dim * static_cast<int64_t>(dtype_size(kv_.view().k[0].dtype()));
  for (int64_t s = 0; s < S; ++s) {
    if (in.mac.modes[static_cast<std::size_t>(s)] != kernels::kMacDecode) continue;
    MacUsage& u = batch.seqs[static_cast<std::size_t>(s)].seq->mac;
    ++u.decode_steps;
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (int64_t h = 0; h < Hq; ++h) {
        const kernels::MacHeadDecision& d = out.decisions[static_cast<std::size_t>((l * S + s) * Hq + h)];
        ++u.heads;
        u.eligible_heads += d.eligible;
        u.hit_heads += d.hit;
        ++totals_.layer_heads[static_cast<std::size_t>(l)];
        totals_.layer_eligible[static_cast<std::size_t>(l)] += d.eligible;
        totals_.layer_hits[static_cast<std::size_t>(l)] += d.hit;
      }
      const int64_t group = Hq / c.num_kv_heads;
      for (int64_t g = 0; g < c.num_kv_heads; ++g) {
        int64_t hits = 0;
        for (int64_t h = g * group; h < (g + 1) * group; ++h)
          hits += out.decisions[static_cast<std::size_t>((l * S + s) * Hq + h)].hit;
        if (hits == group) ++u.groups_all_hit, ++totals_.groups_all_hit;
        else if (hits > 0) ++u.groups_mixed, ++totals_.groups_mixed;
        else ++u.groups_all_miss, ++totals_.groups_all_miss;
      }
      const int64_t read = out.kv_tokens_read[static_cast<std::size_t>(l * S + s)] * kv_token_bytes;
      const int64_t full = static_cast<int64_t>(in.context_lens[static_cast<std::size_t>(s)]) * c.num_kv_heads * kv_token_bytes;
      u.kv_bytes_read += read;
      u.kv_bytes_full += full;
      totals_.kv_bytes_read += read;
      totals_.kv_bytes_full += full;
    }
  }
  if (in.mac.audit) {
    ++totals_.audited_steps;
    double err = 0.0, ref = 0.0;
    for (std::size_t l = 0; l < out.audit_err_sq.size(); ++l) {
      totals_.layer_audit_err_sq[l] += out.audit_err_sq[l];
      totals_.layer_audit_ref_sq[l] += out.audit_ref_sq[l];
      err += out.audit_err_sq[l];
      ref += out.audit_ref_sq[l];
    }
    const double rel = ref > 0.0 ? std::sqrt(err / ref) : 0.0;
    std::size_t b = 0;
    while (b < std::size(kMacAuditBuckets) && rel > kMacAuditBuckets[b]) ++b;
    ++totals_.audit_step_buckets[b];
    totals_.audit_step_sum += rel;
  }
}

}  // namespace macserve::engine
