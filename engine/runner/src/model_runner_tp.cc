// ModelRunner under tensor parallelism: one step on every rank's worker, and the ranks' MAC
// telemetry (each rank decides for its own query heads) put back together as one model's.
#include "macserve/core/error.h"
#include "macserve/runner/model_runner.h"

namespace macserve::engine {

void ModelRunner::post_ranks() {
  tp_->post([this](int r) {
    TensorParallel::Rank& rank = tp_->rank(r);
    rank.kv->copy_blocks(batch_.copies);
    rank.mac_out = {};
    rank.logits =
        rank.model->forward(in_, rank.kv->view(), in_.mac.enabled ? &rank.mac_out : nullptr);
    rank.backend->synchronize();
    if (in_.mac.enabled) rank.model->read_mac_outputs(rank.mac_out);
  });
}

// Decisions [layers, seqs, heads]: rank r's heads are the model's [r * Hq / N, (r + 1) * Hq / N).
// KV tokens read and the audit sums add up over the ranks; where KV heads are replicated (fewer
// than ranks) the reads are divided by the number of copies, so that the telemetry counts each KV
// head once, as without tensor parallelism (the copies read the same head for different queries).
void ModelRunner::merge_rank_mac_outputs() {
  const ModelConfig& c = model_.config();
  const int n = tp_->size();
  const int64_t L = c.num_layers, S = in_.num_seqs(), Hq = c.num_q_heads, hq = Hq / n;
  const int64_t copies = n * kv_.view().layout.num_kv_heads / c.num_kv_heads;
  mac_out_.decisions.assign(static_cast<std::size_t>(L * S * Hq), {});
  mac_out_.kv_tokens_read.assign(static_cast<std::size_t>(L * S), 0);
  mac_out_.audit_err_sq.assign(static_cast<std::size_t>(L), 0.0);
  mac_out_.audit_ref_sq.assign(static_cast<std::size_t>(L), 0.0);
  for (int r = 0; r < n; ++r) {
    const models::MacStepOutputs& o = tp_->rank(r).mac_out;
    MACSERVE_CHECK(o.decisions.size() == static_cast<std::size_t>(L * S * hq) &&
                       o.kv_tokens_read.size() == mac_out_.kv_tokens_read.size(),
                   "rank {}: MAC telemetry of {} decisions for {} layers x {} seqs x {} heads", r,
                   o.decisions.size(), L, S, hq);
    for (int64_t ls = 0; ls < L * S; ++ls)
      for (int64_t h = 0; h < hq; ++h)
        mac_out_.decisions[static_cast<std::size_t>(ls * Hq + r * hq + h)] =
            o.decisions[static_cast<std::size_t>(ls * hq + h)];
    for (std::size_t i = 0; i < o.kv_tokens_read.size(); ++i)
      mac_out_.kv_tokens_read[i] += o.kv_tokens_read[i];
    for (std::size_t l = 0; l < o.audit_err_sq.size() && l < mac_out_.audit_err_sq.size(); ++l) {
      mac_out_.audit_err_sq[l] += o.audit_err_sq[l];
      mac_out_.audit_ref_sq[l] += o.audit_ref_sq[l];
    }
  }
  if (copies > 1)
    for (int64_t& k : mac_out_.kv_tokens_read) k /= copies;
}

}  // namespace macserve::engine
