#include "macserve/cache/block_manager.h"

#include <algorithm>

#include "macserve/core/error.h"

namespace macserve::cache {

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size, bool enable_prefix_caching)
    : block_size_(block_size),
      prefix_caching_(enable_prefix_caching),
      blocks_(static_cast<std::size_t>(num_blocks)) {
  MACSERVE_CHECK(num_blocks > 0 && block_size > 0, "need blocks ({} of {} tokens)", num_blocks,
                 block_size);
  for (int32_t i = 0; i < num_blocks; ++i) blocks_[i].free_pos = free_.insert(free_.end(), i);
}

double BlockManager::usage() const {
  return 1.0 - static_cast<double>(num_free_blocks()) / static_cast<double>(num_blocks());
}

// FNV-1a over the parent hash and the block's tokens. Collisions are harmless: hits are checked
// against the stored tokens and parent hash.
uint64_t BlockManager::chain_hash(uint64_t prev, const int32_t* tokens) const {
  uint64_t h = 1469598103934665603ull ^ prev;
  auto mix = [&](uint64_t v) {
    for (int b = 0; b < 8; ++b) {
      h ^= (v >> (8 * b)) & 0xffu;
      h *= 1099511628211ull;
    }
  };
  mix(prev);
  for (int64_t i = 0; i < block_size_; ++i) mix(static_cast<uint32_t>(tokens[i]));
  return h;
}

int64_t BlockManager::cached_prefix_tokens(const std::vector<int32_t>& tokens) const {
  if (!prefix_caching_ || tokens.empty()) return 0;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  uint64_t prev = 0;
  int64_t n = 0;
  for (; n < max_blocks; ++n) {
    const int32_t* t = tokens.data() + n * block_size_;
    const uint64_t h = chain_hash(prev, t);
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    const Block& b = blocks_[it->second];
    if (b.parent_hash != prev || !std::equal(b.tokens.begin(), b.tokens.end(), t)) break;
    prev = h;
  }
  return n * block_size_;
}

int64_t BlockManager::prefix_blocks_from_free_list(const std::vector<int32_t>& tokens,
                                                   int64_t num_cached) const {
  int64_t n = 0;
  uint64_t prev = 0;
  for (int64_t i = 0; i < num_cached / block_size_; ++i) {
    prev = chain_hash(prev, tokens.data() + i * block_size_);
    n += blocks_[cached_.at(prev)].ref_count == 0;
  }
  return n;
}

void BlockManager::acquire_prefix(const std::vector<int32_t>& tokens, int64_t num_cached,
                                  std::vector<int32_t>& table) {
  MACSERVE_CHECK(table.empty() && num_cached % block_size_ == 0,
                 "acquire_prefix on a non-empty table");
  if (!prefix_caching_) return;
  stats_.prefix_queries += (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  stats_.prefix_hits += num_cached / block_size_;
  uint64_t prev = 0;
  for (int64_t i = 0; i < num_cached / block_size_; ++i) {
    prev = chain_hash(prev, tokens.data() + i * block_size_);
    const int32_t id = cached_.at(prev);
    Block& b = blocks_[id];
    if (b.ref_count++ == 0) free_.erase(b.free_pos);
    table.push_back(id);
  }
}

int32_t BlockManager::take_free_block() {
  MACSERVE_CHECK(!free_.empty(), "no free KV block");
  const int32_t id = free_.front();
  free_.pop_front();
  Block& b = blocks_[id];
  if (b.sealed) {  // evict its cached content
    if (auto it = cached_.find(b.hash); it != cached_.end() && it->second == id) cached_.erase(it);
    b.sealed = false;
    b.tokens.clear();
  }
  b.ref_count = 1;
  return id;
}

// The first position written is num_computed; its block needs a private copy when shared.
bool BlockManager::needs_copy(const std::vector<int32_t>& table, int64_t num_computed,
                              int64_t num_tokens) const {
  const int64_t idx = num_computed / block_size_;
  return num_tokens > num_computed && idx < static_cast<int64_t>(table.size()) &&
         blocks_[table[static_cast<std::size_t>(idx)]].ref_count > 1;
}

bool BlockManager::can_grow(const std::vector<int32_t>& table, int64_t num_computed,
                            int64_t num_tokens) const {
  const int64_t needed =
      std::max<int64_t>(0, blocks_for_tokens(num_tokens) - static_cast<int64_t>(table.size())) +
      (needs_copy(table, num_computed, num_tokens) ? 1 : 0);
  return needed <= num_free_blocks();
}

void BlockManager::grow(std::vector<int32_t>& table, int64_t num_computed, int64_t num_tokens,
                        std::vector<BlockCopy>& copies) {
  MACSERVE_CHECK(can_grow(table, num_computed, num_tokens), "grow without free blocks");
  if (needs_copy(table, num_computed, num_tokens)) {
    const auto idx = static_cast<std::size_t>(num_computed / block_size_);
    const int32_t src = table[idx];
    const int32_t dst = take_free_block();
    --blocks_[src].ref_count;
    table[idx] = dst;
    copies.push_back({src, dst});
    ++stats_.cow_copies;
  }
  while (static_cast<int64_t>(table.size()) < blocks_for_tokens(num_tokens))
    table.push_back(take_free_block());
}

int64_t BlockManager::seal(const std::vector<int32_t>& table, const std::vector<int32_t>& tokens,
                           int64_t num_computed, int64_t num_sealed) {
  if (!prefix_caching_) return num_sealed;
  const int64_t full =
      std::min<int64_t>(num_computed / block_size_, static_cast<int64_t>(table.size()));
  for (int64_t i = num_sealed; i < full; ++i) {
    Block& b = blocks_[table[static_cast<std::size_t>(i)]];
    const uint64_t prev = i == 0 ? 0 : blocks_[table[static_cast<std::size_t>(i - 1)]].hash;
    if (b.sealed) continue;  // acquired from the cache
    b.parent_hash = prev;
    b.hash = chain_hash(prev, tokens.data() + i * block_size_);
    b.tokens.assign(tokens.begin() + i * block_size_, tokens.begin() + (i + 1) * block_size_);
    b.sealed = true;
    cached_.emplace(b.hash, table[static_cast<std::size_t>(i)]);  // keeps an existing twin
  }
  return std::max(num_sealed, full);
}

void BlockManager::share(const std::vector<int32_t>& table) {
  for (int32_t id : table) ++blocks_[id].ref_count;
}

void BlockManager::release(std::vector<int32_t>& table) {
  // Last block first: the free list reuses the oldest freed, so prefixes outlive their tails.
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    Block& b = blocks_[*it];
    MACSERVE_CHECK(b.ref_count > 0, "double free of block {}", *it);
    if (--b.ref_count == 0) b.free_pos = free_.insert(free_.end(), *it);
  }
  table.clear();
}

}  // namespace macserve::cache
