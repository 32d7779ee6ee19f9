// MacState: host bookkeeping of the MAC-Attention ring-slot pool. A sequence MAC can act on takes
// one slot (a row block of every layer's ring, owned by KvPool) when it first computes a row a
// later decode can match, and one integer, ring_valid_from: the first position whose ring row it
// wrote with this slot. Rows before it belong to a previous owner or were never built, so matching
// never looks at them. Finish and preemption give the slot back; re-prefill rebuilds rows; a
// sequence that finds no free slot runs exact attention. (mac-attention.md Part A #5)
#pragma once

#include <cstdint>
#include <vector>

namespace macserve::cache {

class MacState {
 public:
  explicit MacState(int64_t num_slots);
  int64_t num_slots() const { return static_cast<int64_t>(in_use_.size()); }
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  // Returns a free slot (the caller must hold at most one).
  int32_t acquire();
  void release(int32_t slot);

 private:
  std::vector<bool> in_use_;
  std::vector<int32_t> free_;
};

}  // namespace macserve::cache
