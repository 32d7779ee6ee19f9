// Scheduler: decides each iteration who runs and how many tokens each processes, as plan-then-
// commit over the block manager. Running sequences go first (decodes and unfinished prefill
// chunks, in policy order), then admissions while the token budget, the sequence cap and free
// blocks allow. When a running sequence cannot grow, the lowest-ranked running sequence (latest
// arrival under FCFS; lowest priority, then latest, under the priority policy) is preempted by
// recompute: its blocks are freed and it re-queues at the front with "prompt + generated so far".
// With async scheduling the engine schedules step N+1 while step N runs: a sequence's token still
// to be sampled by step N (Sequence::num_pending) counts as known, and commit(N) comes right after
// step N is launched (the K/V it computes lands, in stream order, before any later step reads it).
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "macserve/cache/block_manager.h"
#include "macserve/cache/mac_state.h"
#include "macserve/scheduler/sequence.h"

namespace macserve::engine {

enum class SchedulingPolicy { kFcfs, kPriority };

struct ScheduledSeq {
  Sequence* seq;
  int64_t num_new_tokens;
  bool sample;  // this chunk reaches the end of the sequence: a token will be sampled
};

struct SchedulerOutput {
  std::vector<ScheduledSeq> seqs;
  std::vector<cache::BlockCopy> copies;  // copy-on-write KV copies to do before the step
  int64_t num_batched_tokens = 0;
};

struct SchedulerLimits {
  int64_t max_num_seqs = 64;
  int64_t max_num_batched_tokens = 2048;
  SchedulingPolicy policy = SchedulingPolicy::kFcfs;
};

class Scheduler {
 public:
  // With `mac`, every running sequence holds a MAC ring slot (at most mac->num_slots() run).
  Scheduler(cache::BlockManager& blocks, SchedulerLimits limits, cache::MacState* mac = nullptr,
            int64_t mac_window = 0)
      : blocks_(blocks), limits_(limits), mac_(mac), mac_window_(mac_window) {}

  void add(Sequence* seq);
  SchedulerOutput schedule();
  // After the step was launched: advances num_computed and seals completed blocks into the prefix
  // cache (sequences finished since schedule() are skipped).
  void commit(const SchedulerOutput& out);
  // Removes a finished or aborted sequence from the queues and frees its blocks.
  void remove(Sequence* seq);

  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const std::vector<Sequence*>& running() const { return running_; }
  int64_t num_preemptions() const { return num_preemptions_; }

 private:
  bool ranks_before(const Sequence* a, const Sequence* b) const;
  void preempt(Sequence* seq);
  void release_ring(Sequence* seq);
  bool try_admit(Sequence* seq, int64_t& budget, SchedulerOutput& out);

  cache::BlockManager& blocks_;
  SchedulerLimits limits_;
  cache::MacState* mac_;
  int64_t mac_window_;
  std::deque<Sequence*> waiting_;   // in rank order
  std::vector<Sequence*> running_;  // in rank order
  int64_t num_preemptions_ = 0;
};

}  // namespace macserve::engine
