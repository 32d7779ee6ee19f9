#include "macserve/scheduler/scheduler.h"

#include <algorithm>

#include "macserve/core/error.h"

namespace macserve::engine {

bool Scheduler::ranks_before(const Sequence* a, const Sequence* b) const {
  if (limits_.policy == SchedulingPolicy::kPriority && a->priority != b->priority)
    return a->priority < b->priority;
  if (a->arrival_order != b->arrival_order) return a->arrival_order < b->arrival_order;
  return a->index < b->index;
}

void Scheduler::add(Sequence* seq) {
  seq->status = SeqStatus::kWaiting;
  auto pos =
      std::upper_bound(waiting_.begin(), waiting_.end(), seq,
                       [&](const Sequence* a, const Sequence* b) { return ranks_before(a, b); });
  waiting_.insert(pos, seq);
}

void Scheduler::release_ring(Sequence* seq) {
  if (mac_ != nullptr && seq->ring_slot >= 0) mac_->release(seq->ring_slot);
  seq->ring_slot = -1;
}

// For an admission whose prefill ends at `prefill_end`.
int64_t Scheduler::ring_rows_from(const Sequence& seq, int64_t prefill_end) const {
  const int64_t last_decode =
      seq.prompt_len + seq.params.max_tokens - 2;  // its token is never computed
  const int64_t first_match = std::max(ring_policy_.min_context, prefill_end);
  if (last_decode < first_match) return -1;
  return std::max<int64_t>(0, first_match - ring_policy_.window);
}

// The cached prefix an admission may take: all of it, or under MacRingPolicy::deterministic the
// whole blocks before its first ring row (so the prefill builds every row a decode can match).
int64_t Scheduler::usable_cached_tokens(const Sequence& seq) const {
  const int64_t cached = blocks_.cached_prefix_tokens(seq.tokens);
  if (mac_ == nullptr || !ring_policy_.deterministic) return cached;
  const int64_t rows_from = ring_rows_from(seq, seq.total_len());
  if (rows_from < 0) return cached;
  return std::min(cached, rows_from / blocks_.block_size() * blocks_.block_size());
}

// Called for every scheduled sequence: a slot when this step computes a row that a later decode
// can match. Rows before the slot was taken were never built, so they are never candidates.
void Scheduler::take_ring(Sequence* seq, int64_t num_new_tokens) {
  if (mac_ == nullptr || seq->ring_slot >= 0 || seq->ring_rows_from < 0) return;
  if (seq->num_computed + num_new_tokens <= seq->ring_rows_from) return;  // no such row yet
  if (mac_->num_free() == 0) {
    if (!seq->ring_missed) ++ring_stats_.misses;
    seq->ring_missed = true;
    return;
  }
  seq->ring_slot = mac_->acquire();
  seq->ring_valid_from = std::max(seq->ring_rows_from, seq->num_computed);
  ++ring_stats_.taken;
}

void Scheduler::preempt(Sequence* seq) {
  blocks_.release(seq->block_table);
  release_ring(seq);
  seq->num_computed = 0;
  seq->num_exact_kv = 0;
  seq->num_sealed_blocks = 0;
  ++seq->num_preemptions;
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  add(seq);
  ++num_preemptions_;
}

// Admits `seq` with as much of its remaining work as the budget allows, reusing cached prefix
// blocks. Returns false (changing nothing) when the blocks are not there.
bool Scheduler::try_admit(Sequence* seq, int64_t& budget, SchedulerOutput& out) {
  const int64_t bs = blocks_.block_size();
  const int64_t cached = seq->block_table.empty() ? usable_cached_tokens(*seq) : 0;
  const int64_t start = std::max(cached, seq->num_computed);
  const int64_t n = std::min(seq->total_len() - start, budget);
  const int64_t need = blocks_.prefix_blocks_from_free_list(seq->tokens, cached) +
                       blocks_.blocks_for_tokens(start + n) -
                       static_cast<int64_t>(seq->block_table.size()) - cached / bs;
  if (need > blocks_.num_free_blocks()) return false;
  // Every lookup counts as a prefix-cache query, a miss included (hit rate = hits / queries).
  if (seq->block_table.empty()) blocks_.acquire_prefix(seq->tokens, cached, seq->block_table);
  if (cached > 0) seq->num_computed = seq->num_exact_kv = cached;
  if (seq->num_preemptions == 0) seq->num_cached_prompt = std::min(cached, seq->prompt_len);
  blocks_.grow(seq->block_table, seq->num_computed, seq->num_computed + n, out.copies);
  // This admission's prefill (re)builds the ring rows its decodes can match (rows of prefix-cached
  // positions are not built, so they are not candidates either); a ring slot comes with the first
  // such row.
  seq->prefill_end = seq->total_len();
  seq->ring_rows_from = mac_ != nullptr ? ring_rows_from(*seq, seq->prefill_end) : -1;
  seq->ring_missed = false;
  take_ring(seq, n);
  seq->status = SeqStatus::kRunning;
  auto pos =
      std::upper_bound(running_.begin(), running_.end(), seq,
                       [&](const Sequence* a, const Sequence* b) { return ranks_before(a, b); });
  running_.insert(pos, seq);
  out.seqs.push_back({seq, n, seq->num_computed + n == seq->total_len()});
  out.num_batched_tokens += n;
  budget -= n;
  return true;
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  int64_t budget = limits_.max_num_batched_tokens;
  // 1. Running sequences in rank order. Growing may preempt the lowest-ranked (possibly `seq`).
  std::vector<Sequence*> order = running_;
  for (Sequence* seq : order) {
    // A sequence whose token in flight is certainly its last gets no further step.
    if (budget == 0 || seq->status != SeqStatus::kRunning || seq->pending_is_last) continue;
    // Tokens still to be sampled by the step in flight count as known: their K/V is computed in
    // this step, and the runner fills their ids in before launching it.
    const int64_t n = std::min(seq->total_len() + seq->num_pending - seq->num_computed, budget);
    MACSERVE_CHECK(n > 0, "running sequence {} has nothing to compute", seq->id);
    while (seq->status == SeqStatus::kRunning &&
           !blocks_.can_grow(seq->block_table, seq->num_computed, seq->num_computed + n)) {
      preempt(running_.back());
    }
    if (seq->status != SeqStatus::kRunning) continue;
    blocks_.grow(seq->block_table, seq->num_computed, seq->num_computed + n, out.copies);
    take_ring(seq, n);
    out.seqs.push_back({seq, n, seq->num_computed + n == seq->total_len() + seq->num_pending});
    out.num_batched_tokens += n;
    budget -= n;
  }
  // 2. Admissions in rank order (preempted sequences rank where they arrived). n > 1 siblings wait
  // until completion 0's prompt is cached, then share its blocks.
  for (std::size_t i = 0; i < waiting_.size() && budget > 0;) {
    if (static_cast<int64_t>(running_.size()) >= limits_.max_num_seqs) break;
    Sequence* seq = waiting_[i];
    // Preempted while a token of it is in flight: admitted once that token is known.
    if (seq->num_pending > 0 ||
        (seq->wait_for != nullptr && seq->wait_for->num_computed < seq->wait_for->prompt_len)) {
      ++i;
      continue;
    }
    if (!try_admit(seq, budget, out)) break;
    waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  return out;
}

void Scheduler::commit(const SchedulerOutput& out) {
  for (const ScheduledSeq& s : out.seqs) {
    Sequence* seq = s.seq;
    if (seq->status == SeqStatus::kFinished) continue;  // finished or cancelled after scheduling
    if (!seq->mac_decode_row(s.num_new_tokens) && seq->num_exact_kv == seq->num_computed)
      seq->num_exact_kv += s.num_new_tokens;
    seq->num_computed += s.num_new_tokens;
    const int64_t sealable = ring_policy_.deterministic ? seq->num_exact_kv : seq->num_computed;
    seq->num_sealed_blocks =
        blocks_.seal(seq->block_table, seq->tokens, sealable, seq->num_sealed_blocks);
  }
}

void Scheduler::remove(Sequence* seq) {
  blocks_.release(seq->block_table);
  release_ring(seq);
  seq->status = SeqStatus::kFinished;
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end())
    running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), seq); it != waiting_.end())
    waiting_.erase(it);
  for (Sequence* other : waiting_)
    if (other->wait_for == seq) other->wait_for = nullptr;
}

}  // namespace macserve::engine
