// BlockManager: allocation, reference counts, prefix caching with token checks, copy-on-write,
// eviction of cached blocks.
#include <gtest/gtest.h>

#include <numeric>

#include "macserve/cache/block_manager.h"

using macserve::cache::BlockCopy;
using macserve::cache::BlockManager;

namespace {

std::vector<int32_t> iota_tokens(int n, int start = 100) {
  std::vector<int32_t> t(static_cast<std::size_t>(n));
  std::iota(t.begin(), t.end(), start);
  return t;
}

TEST(BlockManager, GrowReleaseAndUsage) {
  BlockManager bm(4, 16);
  std::vector<int32_t> table;
  std::vector<BlockCopy> copies;
  EXPECT_TRUE(bm.can_grow(table, 0, 64));
  EXPECT_FALSE(bm.can_grow(table, 0, 65));
  bm.grow(table, 0, 17, copies);
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(bm.num_free_blocks(), 2);
  EXPECT_DOUBLE_EQ(bm.usage(), 0.5);
  bm.grow(table, 17, 32, copies);  // still two blocks
  EXPECT_EQ(table.size(), 2u);
  EXPECT_TRUE(copies.empty());
  bm.release(table);
  EXPECT_TRUE(table.empty());
  EXPECT_EQ(bm.num_free_blocks(), 4);
}

TEST(BlockManager, PrefixHitsNeedEqualTokensAndLeaveTheLastTokenToCompute) {
  BlockManager bm(8, 16);
  std::vector<BlockCopy> copies;
  auto a = iota_tokens(40);
  std::vector<int32_t> ta;
  bm.grow(ta, 0, 40, copies);
  EXPECT_EQ(bm.seal(ta, a, 40, 0), 2);  // two full blocks sealed, the partial one not
  EXPECT_EQ(bm.cached_prefix_tokens(a), 32);
  auto b = a;
  b[20] = 7;  // differs in the second block
  EXPECT_EQ(bm.cached_prefix_tokens(b), 16);
  b[3] = 7;
  EXPECT_EQ(bm.cached_prefix_tokens(b), 0);
  // A prompt of exactly 32 tokens reuses one block: its last token must be recomputed for logits.
  EXPECT_EQ(bm.cached_prefix_tokens(iota_tokens(32)), 16);
  // Acquiring shares the blocks (ref counts) and counts the hit.
  std::vector<int32_t> tb;
  bm.acquire_prefix(a, 32, tb);
  EXPECT_EQ(tb, std::vector<int32_t>(ta.begin(), ta.begin() + 2));
  EXPECT_EQ(bm.stats().prefix_hits, 2);
  bm.release(ta);
  EXPECT_EQ(bm.num_free_blocks(),
            8 - 2);  // A's partial block is free again; the shared two are not
  bm.release(tb);
  EXPECT_EQ(bm.num_free_blocks(), 8);
  // Freed sealed blocks stay cached until their ids are reused.
  EXPECT_EQ(bm.cached_prefix_tokens(a), 32);
  EXPECT_EQ(bm.prefix_blocks_from_free_list(a, 32), 2);
}

TEST(BlockManager, CachedBlocksAreEvictedOldestFirstWhenIdsAreNeeded) {
  BlockManager bm(3, 4);
  std::vector<BlockCopy> copies;
  auto a = iota_tokens(9);
  std::vector<int32_t> ta;
  bm.grow(ta, 0, 9, copies);
  bm.seal(ta, a, 9, 0);
  bm.release(ta);
  EXPECT_EQ(bm.cached_prefix_tokens(a), 8);
  std::vector<int32_t> other;
  bm.grow(other, 0, 4, copies);  // takes the oldest freed: A's tail block (freed first)
  EXPECT_EQ(bm.cached_prefix_tokens(a), 8);
  bm.grow(other, 4, 8, copies);  // next: A's second block -> evicted
  EXPECT_EQ(bm.cached_prefix_tokens(a), 4);
  bm.grow(other, 8, 12, copies);
  EXPECT_EQ(bm.cached_prefix_tokens(a), 0);
}

TEST(BlockManager, CopyOnWriteWhenASharedPartialBlockIsWritten) {
  BlockManager bm(6, 4);
  std::vector<BlockCopy> copies;
  std::vector<int32_t> parent;
  bm.grow(parent, 0, 6, copies);  // blocks: full + partial (2 of 4 used)
  std::vector<int32_t> child = parent;
  bm.share(child);
  EXPECT_EQ(bm.num_free_blocks(), 4);
  EXPECT_TRUE(bm.can_grow(child, 6, 7));
  bm.grow(child, 6, 7, copies);  // writes position 6 into the shared partial block
  ASSERT_EQ(copies.size(), 1u);
  EXPECT_EQ(copies[0].src, parent[1]);
  EXPECT_EQ(copies[0].dst, child[1]);
  EXPECT_NE(child[1], parent[1]);
  EXPECT_EQ(child[0], parent[0]);  // the full block stays shared
  EXPECT_EQ(bm.stats().cow_copies, 1);
  copies.clear();
  bm.grow(parent, 6, 7, copies);  // the parent's block is private again: no copy
  EXPECT_TRUE(copies.empty());
  bm.release(child);
  bm.release(parent);
  EXPECT_EQ(bm.num_free_blocks(), 6);
}

TEST(BlockManager, DoubleFreeIsCaught) {
  BlockManager bm(2, 4);
  std::vector<BlockCopy> copies;
  std::vector<int32_t> t;
  bm.grow(t, 0, 4, copies);
  std::vector<int32_t> alias = t;
  bm.release(t);
  EXPECT_THROW(bm.release(alias), std::exception);
}

}  // namespace
