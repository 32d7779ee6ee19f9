// Scheduler: decides each iteration who runs and how many tokens each processes. FCFS; running
// sequences first (decodes and unfinished prefill chunks), then admissions while the token budget,
// the sequence cap and the free blocks allow. When a running sequence cannot grow, the most
// recently arrived running sequence is preempted by recompute (blocks freed, state reset to
// "prompt + generated so far", re-queued at the front).
#pragma once

#include <deque>
#include <memory>
#include <vector>

#include "macserve/cache/block_manager.h"
#include "sequence.h"

namespace macserve::engine {

struct ScheduledSeq {
  Sequence* seq;
  int64_t num_new_tokens;
  bool sample;  // this chunk reaches the end of the sequence: a token will be sampled
};

struct SchedulerLimits {
  int64_t max_num_seqs;
  int64_t max_num_batched_tokens;
};

class Scheduler {
 public:
  Scheduler(cache::BlockManager& blocks, SchedulerLimits limits) : blocks_(blocks), limits_(limits) {}

  void add(Sequence* seq) { waiting_.push_back(seq); }
  std::vector<ScheduledSeq> schedule();
  // Removes a finished or aborted sequence from the queues and frees its blocks.
  void remove(Sequence* seq);

  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const std::vector<Sequence*>& running() const { return running_; }
  int64_t num_preemptions() const { return num_preemptions_; }

 private:
  void preempt(Sequence* seq);

  cache::BlockManager& blocks_;
  SchedulerLimits limits_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;  // in arrival order
  int64_t num_preemptions_ = 0;
};

}  // namespace macserve::engine
