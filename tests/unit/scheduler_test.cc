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
  void make(int64_t num_blocks, int64_t block_size, SchedulerLimits limits, bool prefix_caching = false) {
    blocks_ = std::make_unique<cache::BlockManager>(num_blocks, block_size, prefix_caching);
    sched_ = std::make_unique<Scheduler>(*blocks_, limits);
  }
  // Adds request `id` with a prompt of `len` tokens that stops after `max_tokens` generated.
  Sequence* add(const std::string& id, int len, int max_tokens, int priority = 0, int first_token = 10) {
    std::vector<int32_t> prompt;
    for (int i = 0; i < len; ++i) prompt.push_back(first_token + i % 50);
    sampling::SamplingParams p;
    p.max_tokens = max_tokens;
    seqs_.push_back(std::make_unique<Sequence>(id, 0, prompt, p, std::make_shared<ResponseStream>(), tok_, 1));
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
  add("a", 3, 4);         // needs 7 slots (4 blocks) by its end
  add("b", 3, 4);
  expect_table({
      "a:3* b:3*",   // 2 + 2 blocks
      "a:1* b:1*",   // positions 3: inside the second blocks
      "a:1*",        // a needs a third block: b (newest) is preempted
      "a:1*",        // a samples its 4th token and finishes, freeing 3 blocks
      "b:5*",        // b recomputes prompt + its 2 generated tokens, samples its 3rd
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
  expect_drained();
}

TEST_F(SchedulerTable, BudgetOfOneTokenStillMakesProgress) {
  make(64, 4, {4, 1});
  add("a", 3, 1);
  add("b", 1, 1);
  expect_table({"a:1", "a:1", "a:1*", "b:1*", ""});
  expect_drained();
}

}  // namespace
}  // namespace macserve::engine
