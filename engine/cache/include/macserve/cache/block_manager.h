// BlockManager: host bookkeeping of fixed-size KV blocks: ids, reference counts, and prefix caching
// by chained block hashes with a token check on every hit. Never a device pointer; the KV memory
// belongs to KvPool. Query, then commit: can_allocate()/allocate(), can_grow()/grow().
//
// Prefix caching: a block whose tokens are all computed is "sealed": its hash (chained with the
// previous block's) is registered. A new sequence whose leading full blocks hash and compare equal
// reuses them (ref count + 1). Freed sealed blocks stay cached, oldest-freed reused first, until
// their id is needed for new data.
#pragma once

#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace macserve::cache {

struct BlockManagerStats {
  int64_t prefix_queries = 0;  // full prompt blocks looked up
  int64_t prefix_hits = 0;     // ... found in the cache
  int64_t cow_copies = 0;      // copy-on-write copies made
};

// One (source block, destination block) KV copy the runner must perform before the next step.
struct BlockCopy {
  int32_t src;
  int32_t dst;
};

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size, bool enable_prefix_caching = true);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(blocks_.size()); }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t blocks_for_tokens(int64_t n) const { return (n + block_size_ - 1) / block_size_; }
  double usage() const;  // fraction of blocks referenced by some sequence
  const BlockManagerStats& stats() const { return stats_; }

  // Prefix lookup for a sequence with no blocks yet: how many leading tokens are cached (a
  // multiple of the block size, never all of `tokens`: the last token is always computed).
  int64_t cached_prefix_tokens(const std::vector<int32_t>& tokens) const;
  // Takes the cached blocks for `num_cached` leading tokens (from cached_prefix_tokens; 0 on a
  // miss) and counts the lookup: the prompt's full blocks as queries, the cached ones as hits.
  void acquire_prefix(const std::vector<int32_t>& tokens, int64_t num_cached,
                      std::vector<int32_t>& table);
  // Free blocks needed to take the cached prefix (cached blocks with ref 0 count as free ones).
  int64_t prefix_blocks_from_free_list(const std::vector<int32_t>& tokens,
                                       int64_t num_cached) const;

  // Grows `table` to cover `num_tokens` tokens. A shared last block that will be written is
  // copied first (copy-on-write); the copy is appended to `copies`.
  bool can_grow(const std::vector<int32_t>& table, int64_t num_computed, int64_t num_tokens) const;
  void grow(std::vector<int32_t>& table, int64_t num_computed, int64_t num_tokens,
            std::vector<BlockCopy>& copies);

  // Registers the blocks of `table` fully covered by the first `num_computed` of `tokens`, starting
  // after the `num_sealed` blocks already done; returns the new number of sealed blocks.
  int64_t seal(const std::vector<int32_t>& table, const std::vector<int32_t>& tokens,
               int64_t num_computed, int64_t num_sealed);
  // Adds a reference to every block (n > 1 children sharing a parent's blocks).
  void share(const std::vector<int32_t>& table);
  // Drops one reference to each block of `table` and clears it.
  void release(std::vector<int32_t>& table);

 private:
  struct Block {
    int32_t ref_count = 0;
    bool sealed = false;
    uint64_t hash = 0;
    uint64_t parent_hash = 0;
    std::vector<int32_t> tokens;  // kept for the token check on hits
    std::list<int32_t>::iterator free_pos;
  };
  uint64_t chain_hash(uint64_t prev, const int32_t* tokens) const;
  int32_t take_free_block();
  bool needs_copy(const std::vector<int32_t>& table, int64_t num_computed,
                  int64_t num_tokens) const;

  int64_t block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::list<int32_t> free_;                       // ref_count == 0, oldest freed first
  std::unordered_map<uint64_t, int32_t> cached_;  // hash -> sealed block
  BlockManagerStats stats_;
};

}  // namespace macserve::cache
