// BlockManager: host bookkeeping of fixed-size KV blocks (ids and reference counts only; the KV
// memory itself belongs to KvPool). Query, then commit: can_allocate() before allocate().
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

namespace macserve::cache {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size);

  int64_t block_size() const { return block_size_; }
  int64_t num_blocks() const { return static_cast<int64_t>(ref_counts_.size()); }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t blocks_for_tokens(int64_t num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Grows `table` so that it covers `num_tokens` tokens.
  bool can_grow(const std::vector<int32_t>& table, int64_t num_tokens) const;
  void grow(std::vector<int32_t>& table, int64_t num_tokens);
  // Drops one reference to each block of `table` and clears it.
  void release(std::vector<int32_t>& table);

  double usage() const;  // fraction of blocks in use

 private:
  int64_t block_size_;
  std::vector<int32_t> ref_counts_;
  std::deque<int32_t> free_;
};

}  // namespace macserve::cache
