#include "macserve/runner/model_runner.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "macserve/core/error.h"

namespace macserve::engine {

ModelRunner::ModelRunner(backend::Backend& backend, models::Model& model, cache::KvPool& kv,
                         MacRunnerOptions mac, TensorParallel* tp)
    : backend_(backend),
      model_(model),
      kv_(kv),
      tp_(tp),
      mac_(std::move(mac)),
      audit_rng_(mac_.audit_seed) {
  if (tp_ != nullptr && !mac_.dump_path.empty())
    throw_error(ErrorCode::kUnsupported,
                "--mac-dump reads one rank's rings: not supported with tensor parallelism");
  const auto layers = static_cast<std::size_t>(model.config().num_layers);
  totals_.layer_heads.assign(layers, 0);
  totals_.layer_eligible.assign(layers, 0);
  totals_.layer_hits.assign(layers, 0);
  totals_.layer_audit_err_sq.assign(layers, 0.0);
  totals_.layer_audit_ref_sq.assign(layers, 0.0);
  if (!mac_.dump_path.empty()) {
    dump_ = std::fopen(mac_.dump_path.c_str(), "w");
    if (dump_ == nullptr)
      throw_error(ErrorCode::kInvalidArgument, "cannot write the MAC dump to {}", mac_.dump_path);
  }
}

ModelRunner::~ModelRunner() {
  if (dump_ != nullptr) std::fclose(dump_);
  if (logits_pinned_ != nullptr) backend_.unregister_host_buffer(logits_pinned_);
  release_greedy_host();
}

void ModelRunner::release_greedy_host() {
  if (greedy_host_ == nullptr) return;
  backend_.unregister_host_buffer(greedy_host_);
  std::free(greedy_host_);
  greedy_host_ = nullptr;
}

models::StepInputs ModelRunner::prepare(const SchedulerOutput& batch) const {
  models::StepInputs in;
  const int64_t block_size = kv_.view().layout.block_size;
  for (const ScheduledSeq& s : batch.seqs)
    in.max_blocks_per_seq =
        std::max<int64_t>(in.max_blocks_per_seq, static_cast<int64_t>(s.seq->block_table.size()));
  in.query_start.push_back(0);
  in.mac.enabled = mac_.enabled;
  in.mac.config = mac_.config;
  for (const ScheduledSeq& s : batch.seqs) {
    const Sequence& seq = *s.seq;
    for (int64_t pos = seq.num_computed; pos < seq.num_computed + s.num_new_tokens; ++pos) {
      // -1: sampled by the step in flight, filled in by finalize().
      in.token_ids.push_back(pos < seq.total_len() ? seq.tokens[static_cast<std::size_t>(pos)]
                                                   : -1);
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
      // A decode is one new token after this admission's prefill; other chunks are exact and build
      // ring rows. Without a ring slot (MAC cannot act on it, or the pool is empty) it is plain.
      in.mac.modes.push_back(seq.ring_slot < 0                      ? kernels::kMacPlain
                             : seq.mac_decode_row(s.num_new_tokens) ? kernels::kMacDecode
                                                                    : kernels::kMacExact);
      in.mac.ring_slots.push_back(seq.ring_slot);
      in.mac.ring_valid_from.push_back(static_cast<int32_t>(seq.ring_valid_from));
      in.mac.rows_from.push_back(static_cast<int32_t>(seq.ring_valid_from));
    }
  }
  // A step without a ring-holding sequence is a full-attention step (no MAC work at all).
  if (in.mac.enabled && std::all_of(in.mac.modes.begin(), in.mac.modes.end(),
                                    [](int8_t m) { return m == kernels::kMacPlain; }))
    in.mac = {};
  return in;
}

void ModelRunner::finalize(const SchedulerOutput& batch, models::StepInputs& in) {
  for (std::size_t s = 0; s < batch.seqs.size(); ++s) {
    const Sequence& seq = *batch.seqs[s].seq;
    const int32_t begin = in.query_start[s], end = in.query_start[s + 1];
    if (seq.status == SeqStatus::kFinished) {
      // Finished (stop token, stop string, cancelled) after it was scheduled: the row still runs,
      // so that the batch keeps its shape, but writes nothing and its logits are ignored. Its
      // blocks are free now, but nobody can take them before this step has run (stream order).
      for (int32_t t = begin; t < end; ++t) {
        in.token_ids[static_cast<std::size_t>(t)] = 0;
        in.slot_mapping[static_cast<std::size_t>(t)] = -1;
      }
      if (!in.mac.modes.empty()) {
        in.mac.modes[s] = kernels::kMacPlain;
        in.mac.ring_slots[s] = -1;
      }
      continue;
    }
    const int64_t first = in.positions[static_cast<std::size_t>(begin)];
    for (int32_t t = begin; t < end; ++t) {
      int32_t& id = in.token_ids[static_cast<std::size_t>(t)];
      if (id >= 0) continue;
      const int64_t pos = first + (t - begin);
      MACSERVE_CHECK(pos < seq.total_len(), "sequence {}: token at position {} was not sampled",
                     seq.id, pos);
      id = seq.tokens[static_cast<std::size_t>(pos)];
    }
  }
}

void ModelRunner::reserve_logits(std::size_t n) {
  if (n <= logits_.capacity() && logits_pinned_ != nullptr) {
    logits_.resize(n);
    return;
  }
  // Page-locked so that the device copies straight into it, asynchronously (async scheduling
  // overlaps the copy with host work).
  if (logits_pinned_ != nullptr) backend_.unregister_host_buffer(logits_pinned_);
  logits_pinned_ = nullptr;
  logits_.reserve(std::max(n, logits_.capacity()));
  logits_.resize(n);
  if (logits_.capacity() > 0 && backend_.device() != Device::kCpu) {
    logits_pinned_ = logits_.data();
    backend_.register_host_buffer(logits_pinned_, logits_.capacity() * sizeof(float));
  }
}

void ModelRunner::launch(const SchedulerOutput& batch, models::StepInputs in,
                         bool greedy_on_device) {
  MACSERVE_CHECK(!in_flight_, "a step is already in flight");
  if (in.mac.enabled && mac_.audit_rate > 0.0)
    in.mac.audit = std::uniform_real_distribution<double>(0.0, 1.0)(audit_rng_) < mac_.audit_rate;
  mac_out_ = {};
  if (tp_ != nullptr) {  // every rank runs the step on its worker; wait() takes the logits
    batch_ = batch;
    in_ = std::move(in);
    greedy_requested_ = greedy_on_device;
    post_ranks();
    in_flight_ = true;
    return;
  }
  kv_.copy_blocks(batch.copies);
  fetch_logits(model_.forward(in, kv_.view(), in.mac.enabled ? &mac_out_ : nullptr),
               greedy_on_device);
  batch_ = batch;
  in_ = std::move(in);
  in_flight_ = true;
}

void ModelRunner::fetch_logits(const Tensor& logits, bool greedy_on_device) {
  greedy_step_ = greedy_on_device && logits.numel() > 0;
  if (greedy_step_) {
    const int64_t rows = logits.dim(0);
    if (rows > greedy_capacity_) {
      release_greedy_host();
      greedy_capacity_ = (rows + 1023) / 1024 * 1024;  // a whole number of 4 KiB pages
      greedy_host_ = static_cast<int32_t*>(
          std::aligned_alloc(4096, static_cast<std::size_t>(greedy_capacity_) * 4));
      MACSERVE_CHECK(greedy_host_ != nullptr, "out of host memory");
      backend_.register_host_buffer(greedy_host_, static_cast<std::size_t>(greedy_capacity_) * 4);
      greedy_dev_ = backend_.alloc(DType::kI32, {greedy_capacity_});
    }
    const Tensor ids = greedy_dev_.slice_rows(0, rows);
    backend_.argmax_rows(logits, ids);
    backend_.copy_to_host_async(ids, greedy_host_);
    logits_.clear();
  } else {
    reserve_logits(static_cast<std::size_t>(logits.numel()));
    if (logits.numel() > 0) backend_.copy_to_host_async(logits, logits_.data());
  }
}

const std::vector<float>& ModelRunner::wait() {
  MACSERVE_CHECK(in_flight_, "no step in flight");
  in_flight_ = false;
  if (tp_ != nullptr) {
    tp_->wait();
    fetch_logits(tp_->rank(0).logits, greedy_requested_);
  }
  backend_.synchronize();
  if (in_.mac.enabled) {
    // The telemetry's device -> host copy was enqueued before the logits copy; synchronize() above
    // covered both.
    if (tp_ != nullptr)
      merge_rank_mac_outputs();
    else
      model_.read_mac_outputs(mac_out_);
    account_mac(batch_, in_, mac_out_);
    if (dump_ != nullptr) dump_mac(batch_, in_, mac_out_);
  }
  return logits_;
}

const std::vector<float>& ModelRunner::run(const SchedulerOutput& batch) {
  launch(batch, prepare(batch));
  return wait();
}

void ModelRunner::account_mac(const SchedulerOutput& batch, const models::StepInputs& in,
                              const models::MacStepOutputs& out) {
  const ModelConfig& c = model_.config();
  const int64_t S = in.num_seqs(), Hq = c.num_q_heads;
  const int64_t kv_token_bytes =
      2 * c.head_dim * static_cast<int64_t>(dtype_size(kv_.view().k[0].dtype()));
  for (int64_t s = 0; s < S; ++s) {
    if (in.mac.modes[static_cast<std::size_t>(s)] != kernels::kMacDecode) continue;
    MacUsage& u = batch.seqs[static_cast<std::size_t>(s)].seq->mac;
    ++u.decode_steps;
    for (int64_t l = 0; l < c.num_layers; ++l) {
      for (int64_t h = 0; h < Hq; ++h) {
        const kernels::MacHeadDecision& d =
            out.decisions[static_cast<std::size_t>((l * S + s) * Hq + h)];
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
        if (hits == group)
          ++u.groups_all_hit, ++totals_.groups_all_hit;
        else if (hits > 0)
          ++u.groups_mixed, ++totals_.groups_mixed;
        else
          ++u.groups_all_miss, ++totals_.groups_all_miss;
      }
      const int64_t read = out.kv_tokens_read[static_cast<std::size_t>(l * S + s)] * kv_token_bytes;
      const int64_t full = static_cast<int64_t>(in.context_lens[static_cast<std::size_t>(s)]) *
                           c.num_kv_heads * kv_token_bytes;
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
