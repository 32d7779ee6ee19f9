#include "macserve/cache/block_manager.h"

#include "macserve/core/error.h"

namespace macserve::cache {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size)
    : block_size_(block_size), ref_counts_(static_cast<std::size_t>(num_blocks), 0) {
  MACSERVE_CHECK(num_blocks > 0 && block_size > 0, "need blocks ({} of {} tokens)", num_blocks, block_size);
  for (int64_t i = 0; i < num_blocks; ++i) free_.push_back(static_cast<int32_t>(i));
}

bool BlockManager::can_grow(const std::vector<int32_t>& table, int64_t num_tokens) const {
  const int64_t needed = blocks_for_tokens(num_tokens) - static_cast<int64_t>(table.size());
  return needed <= num_free_blocks();
}

void BlockManager::grow(std::vector<int32_t>& table, int64_t num_tokens) {
  MACSERVE_CHECK(can_grow(table, num_tokens), "grow without free blocks");
  while (static_cast<int64_t>(table.size()) < blocks_for_tokens(num_tokens)) {
    const int32_t id = free_.front();
    free_.pop_front();
    ref_counts_[id] = 1;
    table.push_back(id);
  }
}

void BlockManager::release(std::vector<int32_t>& table) {
  for (int32_t id : table) {
    MACSERVE_CHECK(ref_counts_[id] > 0, "double free of block {}", id);
    if (--ref_counts_[id] == 0) free_.push_back(id);
  }
  table.clear();
}

double BlockManager::usage() const {
  return 1.0 - static_cast<double>(num_free_blocks()) / static_cast<double>(num_blocks());
}

}  // namespace macserve::cache
