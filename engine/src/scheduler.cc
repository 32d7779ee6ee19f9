#include "scheduler.h"

#include <algorithm>

namespace macserve::engine {

void Scheduler::preempt(Sequence* seq) {
  blocks_.release(seq->block_table);
  seq->num_computed = 0;
  seq->status = SeqStatus::kWaiting;
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  waiting_.push_front(seq);
  ++num_preemptions_;
}

std::vector<ScheduledSeq> Scheduler::schedule() {
  std::vector<ScheduledSeq> out;
  int64_t budget = limits_.max_num_batched_tokens;
  // 1. Running sequences, oldest first. Growing may preempt the newest ones (possibly `seq` itself).
  for (std::size_t i = 0; i < running_.size() && budget > 0;) {
    Sequence* seq = running_[i];
    const int64_t n = std::min(seq->total_len() - seq->num_computed, budget);
    bool preempted_self = false;
    while (!blocks_.can_grow(seq->block_table, seq->num_computed + n)) {
      Sequence* victim = running_.back();
      preempt(victim);
      if (victim == seq) {
        preempted_self = true;
        break;
      }
    }
    if (preempted_self) break;  // everything after it was preempted too
    blocks_.grow(seq->block_table, seq->num_computed + n);
    out.push_back({seq, n, seq->num_computed + n == seq->total_len()});
    budget -= n;
    ++i;
  }
  // 2. Admissions in arrival order (preempted sequences sit at the front).
  while (!waiting_.empty() && budget > 0 && static_cast<int64_t>(running_.size()) < limits_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    const int64_t n = std::min(seq->total_len() - seq->num_computed, budget);
    if (!blocks_.can_grow(seq->block_table, seq->num_computed + n)) break;
    blocks_.grow(seq->block_table, seq->num_computed + n);
    waiting_.pop_front();
    seq->status = SeqStatus::kRunning;
    running_.push_back(seq);
    out.push_back({seq, n, seq->num_computed + n == seq->total_len()});
    budget -= n;
  }
  return out;
}

void Scheduler::remove(Sequence* seq) {
  blocks_.release(seq->block_table);
  seq->status = SeqStatus::kFinished;
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end()) running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), seq); it != waiting_.end()) waiting_.erase(it);
}

}  // namespace macserve::engine
