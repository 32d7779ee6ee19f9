#include "macserve/cache/mac_state.h"

#include "macserve/core/error.h"

namespace macserve::cache {

MacState::MacState(int64_t num_slots) : in_use_(static_cast<std::size_t>(num_slots), false) {
  for (int64_t i = num_slots - 1; i >= 0; --i) free_.push_back(static_cast<int32_t>(i));
}

int32_t MacState::acquire() {
  MACSERVE_CHECK(!free_.empty(), "no free MAC ring slot");
  const int32_t s = free_.back();
  free_.pop_back();
  in_use_[s] = true;
  return s;
}

void MacState::release(int32_t slot) {
  MACSERVE_CHECK(slot >= 0 && slot < num_slots() && in_use_[slot],
                 "release of MAC slot {} not in use", slot);
  in_use_[slot] = false;
  free_.push_back(slot);
}

}  // namespace macserve::cache
