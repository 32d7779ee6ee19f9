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

// Which sequences MAC-Attention can act on (mac-attention.md Part A). A decode at position m
// matches only when m >= min_context, against rows of positions [m - window, m); so a sequence
// whose last decode (position prompt + max_tokens - 2) stays below min_context never needs a ring,
// and rows below max(min_context, first decode) - window are never read.
struct MacRingPolicy {
  int64_t window = 512;        // M
  int64_t min_context = 2048;  // gen_min
  // --deterministic, so that MAC's matches and outputs do not depend on the prefix cache:
  // - a hit stops at the block holding the first row a decode can match, so the prefill builds
  //   every such row as it would without the hit (the rows of cached positions are never built);
  // - only blocks whose K/V no MAC decode row computed are sealed (a MAC decode row's K/V differs
  //   from what a prefill computes for the same token).
  bool deterministic = false;
};

// Ring-slot pool counters (engine stats / metrics).
struct MacRingStats {
  int64_t taken = 0;   // slots handed out
  int64_t misses = 0;  // sequences that needed a slot and found none (once per admission)
};

class Scheduler {
 public:
  // With `mac`, a running sequence takes a MAC ring slot from the pool at the first step that
  // computes a row a later decode can match (policy); without a free slot it runs exact attention
  // (retrying at later steps) and is counted as a miss.
  Scheduler(cache::BlockManager& blocks, SchedulerLimits limits, cache::MacState* mac = nullptr,
            MacRingPolicy policy = {})
      : blocks_(blocks), limits_(limits), mac_(mac), ring_policy_(policy) {}

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
  const MacRingStats& ring_stats() const { return ring_stats_; }

 private:
  bool ranks_before(const Sequence* a, const Sequence* b) const;
  void preempt(Sequence* seq);
  void release_ring(Sequence* seq);
  int64_t ring_rows_from(const Sequence& seq, int64_t prefill_end) const;
  int64_t usable_cached_tokens(const Sequence& seq) const;
  void take_ring(Sequence* seq, int64_t num_new_tokens);
  bool try_admit(Sequence* seq, int64_t& budget, SchedulerOutput& out);

  cache::BlockManager& blocks_;
  SchedulerLimits limits_;
  cache::MacState* mac_;
  MacRingPolicy ring_policy_;
  MacRingStats ring_stats_;
  std::deque<Sequence*> waiting_;   // in rank order
  std::vector<Sequence*> running_;  // in rank order
  int64_t num_preemptions_ = 0;
};

}  // namespace macserve::engine
