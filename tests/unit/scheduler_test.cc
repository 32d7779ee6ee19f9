// Scheduler iteration tables with a fake model step: request ids in, the scheduled (id, tokens)
// of each iteration out. Host only: no model, no KV memory.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <sstream>

#include "macserve/scheduler/scheduler.h"
#include "unit/byte_tokenizer.h"

namespace macserve::engine {
namespace {

class SchedulerTable : public ::testing::Test {
 protected:
  void make(int64_t num_blocks, int64_t block_size, SchedulerLimits limits,
            bool prefix_caching = false) {
    blocks_ = std::make_unique<cache::BlockManager>(num_blocks, block_size, prefix_caching);
    sched_ = std::make_unique<Scheduler>(*blocks_, limits);
  }
  // With a MAC ring-slot pool of `slots` (window M, min context gen_min).
  void make_mac(int64_t num_blocks, int64_t block_size, SchedulerLimits limits, int64_t slots,
                MacRingPolicy policy, bool prefix_caching = false) {
    blocks_ = std::make_unique<cache::BlockManager>(num_blocks, block_size, prefix_caching);
    rings_ = std::make_unique<cache::MacState>(slots);
    sched_ = std::make_unique<Scheduler>(*blocks_, limits, rings_.get(), policy);
  }
  // Adds request `id` with a prompt of `len` tokens that stops after `max_tokens` generated.
  Sequence* add(const std::string& id, int len, int max_tokens, int priority = 0,
                int first_token = 10) {
    std::vector<int32_t> prompt;
    prompt.reserve(static_cast<std::size_t>(len));
    for (int i = 0; i < len; ++i) prompt.push_back(first_token + i % 50);
    sampling::SamplingParams p;
    p.max_tokens = max_tokens;
    seqs_.push_back(
        std::make_unique<Sequence>(id, 0, prompt, p, std::make_shared<ResponseStream>(), tok_, 1));
    Sequence* s = seqs_.back().get();
    s->priority = priority;
    s->arrival_order = ++order_;
    sched_->add(s);
    return s;
  }
  // One iteration: schedule, then the fake model step (commit, sample token 5, finish at max).
  std::string step() {
    SchedulerOutput out = sched_->schedule();
    sched_->commit(out);
    std::ostringstream row;
    for (const ScheduledSeq& s : out.seqs) {
      row << s.seq->id << ":" << s.num_new_tokens << (s.sample ? "*" : "") << " ";
      if (!s.sample) continue;
      s.seq->tokens.push_back(5);
      if (s.seq->num_generated() >= s.seq->params.max_tokens) sched_->remove(s.seq);
    }
    std::string r = row.str();
    if (!r.empty()) r.pop_back();
    return r;
  }
  void expect_table(const std::vector<std::string>& rows) {
    for (std::size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(step(), rows[i]) << "iteration " << i;
  }
  void expect_drained() {
    EXPECT_TRUE(sched_->running().empty());
    EXPECT_TRUE(sched_->waiting().empty());
    EXPECT_EQ(blocks_->num_free_blocks(), blocks_->num_blocks());
  }

  testing_support::ByteTokenizer tok_;
  std::unique_ptr<cache::BlockManager> blocks_;
  std::unique_ptr<cache::MacState> rings_;
  std::unique_ptr<Scheduler> sched_;
  std::vector<std::unique_ptr<Sequence>> seqs_;
  uint64_t order_ = 0;
};

// "id:n" = n new tokens for id this iteration; "*" = a token is sampled.
TEST_F(SchedulerTable, AdmissionRespectsMaxNumSeqs) {
  make(64, 4, {2, 100});
  add("a", 3, 2);
  add("b", 2, 3);
  add("c", 4, 1);
  expect_table({"a:3* b:2*", "a:1* b:1*", "b:1* c:4*", ""});
  expect_drained();
}

TEST_F(SchedulerTable, ChunkedPrefillMixesWithDecodes) {
  make(64, 4, {8, 6});
  add("a", 2, 3);
  add("b", 13, 1);
  expect_table({"a:2* b:4", "a:1* b:5", "a:1* b:4*", ""});
  expect_drained();
}

TEST_F(SchedulerTable, PreemptsTheNewestAndResumesByRecompute) {
  make(4, 2, {8, 100});  // 8 token slots in all
  add("a", 3, 4);        // needs 7 slots (4 blocks) by its end
  add("b", 3, 4);
  expect_table({
      "a:3* b:3*",  // 2 + 2 blocks
      "a:1* b:1*",  // positions 3: inside the second blocks
      "a:1*",       // a needs a third block: b (newest) is preempted
      "a:1*",       // a samples its 4th token and finishes, freeing 3 blocks
      "b:5*",       // b recomputes prompt + its 2 generated tokens, samples its 3rd
      "b:1*",
  });
  EXPECT_EQ(sched_->num_preemptions(), 1);
  EXPECT_EQ(step(), "");
  expect_drained();
}

TEST_F(SchedulerTable, PriorityPolicyAdmitsLowerValuesFirst) {
  make(64, 4, {1, 100, SchedulingPolicy::kPriority});
  add("late", 2, 1, /*priority=*/5);
  add("urgent", 2, 1, /*priority=*/-1);
  add("normal", 2, 1, /*priority=*/0);
  expect_table({"urgent:2*", "normal:2*", "late:2*", ""});
  expect_drained();
}

TEST_F(SchedulerTable, PrefixCacheSkipsComputedBlocks) {
  make(64, 4, {8, 100}, /*prefix_caching=*/true);
  add("a", 10, 1);
  expect_table({"a:10*"});
  add("b", 10, 1);  // same prompt: two full blocks cached, the rest (2 tokens) computed
  expect_table({"b:2*", ""});
  EXPECT_EQ(blocks_->stats().prefix_hits, 2);
  // Both admissions were lookups of two full blocks: a's missed, b's hit.
  EXPECT_EQ(blocks_->stats().prefix_queries, 4);
  expect_drained();
}

TEST_F(SchedulerTable, PrefixCacheMissesCountAsQueries) {
  make(64, 4, {8, 100}, /*prefix_caching=*/true);
  add("a", 10, 1);
  add("b", 9, 1, 0, /*first_token=*/100);  // shares no block with a
  expect_table({"a:10* b:9*", ""});
  EXPECT_EQ(blocks_->stats().prefix_queries, 4);
  EXPECT_EQ(blocks_->stats().prefix_hits, 0);
  expect_drained();
}

TEST_F(SchedulerTable, PrefixCacheOffCountsNoQueries) {
  make(64, 4, {8, 100}, /*prefix_caching=*/false);
  add("a", 10, 1);
  expect_table({"a:10*", ""});
  EXPECT_EQ(blocks_->stats().prefix_queries, 0);
  expect_drained();
}

TEST_F(SchedulerTable, BudgetOfOneTokenStillMakesProgress) {
  make(64, 4, {4, 1});
  add("a", 3, 1);
  add("b", 1, 1);
  expect_table({"a:1", "a:1", "a:1*", "b:1*", ""});
  expect_drained();
}

// MAC ring slots (window 4, min context 8): a decode at position m >= 8 matches rows [m - 4, m),
// so rows from 4 on are needed; a sequence whose last decode (prompt + max_tokens - 2) is below 8
// never takes a slot, and one that needs rows only later takes its slot then.
TEST_F(SchedulerTable, RingSlotsOnlyWhereAndWhenMacCanAct) {
  make_mac(64, 4, {8, 100}, 4, {4, 8});
  Sequence* shorter = add("short", 3, 5);  // last decode at position 6: never eligible
  Sequence* longer = add("long", 6, 6);    // prefill computes positions 4, 5: a slot now
  Sequence* late = add("late", 2, 10);  // prefill [0, 2): no rows; decodes from position 4 need one
  EXPECT_EQ(step(), "short:3* long:6* late:2*");
  EXPECT_EQ(shorter->ring_slot, -1);
  EXPECT_GE(longer->ring_slot, 0);
  EXPECT_EQ(longer->ring_valid_from, 4);
  EXPECT_EQ(late->ring_slot, -1);
  EXPECT_EQ(step(), "short:1* long:1* late:1*");  // late computes position 2
  EXPECT_EQ(late->ring_slot, -1);
  EXPECT_EQ(step(), "short:1* long:1* late:1*");  // position 3
  EXPECT_EQ(late->ring_slot, -1);
  EXPECT_EQ(step(), "short:1* long:1* late:1*");  // position 4: the first row a decode can match
  EXPECT_GE(late->ring_slot, 0);
  EXPECT_EQ(late->ring_valid_from, 4);
  EXPECT_EQ(shorter->ring_slot, -1);
  EXPECT_EQ(rings_->num_free(), 2);
  while (!step().empty()) {
  }
  EXPECT_EQ(sched_->ring_stats().taken, 2);
  EXPECT_EQ(sched_->ring_stats().misses, 0);
  EXPECT_EQ(rings_->num_free(), 4);
  expect_drained();
}

// --deterministic under MAC (window 4, min context 0, blocks of 4): the repeated 17-token prompt
// finds 16 tokens cached, but its first ring row is position 13, so the hit stops at 12 and the
// prefill builds rows 13-16 as an uncached prefill does; otherwise the ring starts at 16.
TEST_F(SchedulerTable, DeterministicPrefixHitStopsBeforeTheFirstRingRow) {
  for (const bool rebuild : {false, true}) {
    SCOPED_TRACE(rebuild ? "deterministic" : "default");
    make_mac(64, 4, {8, 100}, 4, {4, 0, rebuild}, /*prefix_caching=*/true);
    add("a", 17, 3);
    expect_table({"a:17*", "a:1*", "a:1*", ""});
    Sequence* b = add("b", 17, 3);
    EXPECT_EQ(step(), rebuild ? "b:5*" : "b:1*");
    EXPECT_EQ(b->num_cached_prompt, rebuild ? 12 : 16);
    EXPECT_EQ(b->ring_valid_from, rebuild ? 13 : 16);
    expect_table({"b:1*", "b:1*", ""});
    expect_drained();
  }
}

// One slot for two long sequences: the second runs without (a miss, counted once however many
// steps it retries) and takes the slot the step after the first one finished.
TEST_F(SchedulerTable, RingPoolExhaustionIsAMissAndTheSlotIsTakenWhenFreed) {
  make_mac(64, 4, {8, 100}, 1, {4, 0});
  Sequence* a = add("a", 4, 3);
  Sequence* b = add("b", 4, 6);
  EXPECT_EQ(step(), "a:4* b:4*");
  EXPECT_GE(a->ring_slot, 0);
  EXPECT_EQ(b->ring_slot, -1);
  EXPECT_EQ(step(), "a:1* b:1*");
  EXPECT_EQ(step(), "a:1* b:1*");  // a finishes: its slot is back
  EXPECT_EQ(sched_->ring_stats().misses, 1);
  EXPECT_EQ(rings_->num_free(), 1);
  EXPECT_EQ(step(), "b:1*");  // b computes position 6 with the slot: rows from there on are valid
  EXPECT_EQ(b->ring_slot, 0);
  EXPECT_EQ(b->ring_valid_from, 6);
  while (!step().empty()) {
  }
  EXPECT_EQ(sched_->ring_stats().taken, 2);
  EXPECT_EQ(sched_->ring_stats().misses, 1);
  EXPECT_EQ(rings_->num_free(), 1);
  expect_drained();
}

// A storm of requests through a small KV pool: preemption and finish give every slot back, and
// a preempted sequence takes one again when its recompute needs rows.
TEST_F(SchedulerTable, PreemptionAndFinishReturnRingSlots) {
  make_mac(12, 2, {6, 100}, 3, {4, 6});  // 24 KV token slots in all
  for (int i = 0; i < 20; ++i) add(std::to_string(100 + i), 3 + i % 5, 2 + i % 7);
  int64_t max_in_use = 0;
  for (int it = 0; it < 400; ++it) {
    step();
    max_in_use = std::max(max_in_use, rings_->num_slots() - rings_->num_free());
    int64_t held = 0;
    for (const Sequence* s : sched_->running()) held += s->ring_slot >= 0;
    for (const Sequence* s : sched_->waiting()) EXPECT_EQ(s->ring_slot, -1) << s->id;
    EXPECT_EQ(held, rings_->num_slots() - rings_->num_free());
    if (sched_->running().empty() && sched_->waiting().empty()) break;
  }
  EXPECT_GT(sched_->num_preemptions(), 0);
  EXPECT_EQ(max_in_use, 3);
  EXPECT_GT(sched_->ring_stats().taken, 3);
  EXPECT_EQ(rings_->num_free(), 3);
  expect_drained();
}

}  // namespace
}  // namespace macserve::engine
