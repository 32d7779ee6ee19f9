// MacState: host bookkeeping of MAC-Attention ring slots. Each running request holds one slot
// (a row block of every layer's ring, owned by KvPool) and one integer, ring_valid_from: the first
// position whose ring row this request wrote. Rows before it belong to a previous owner or were
// never built, so matching never looks at them. Slot reuse and preemption reset it; re-prefill
// rebuilds rows. (mac-attention.md Part A #5)
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
