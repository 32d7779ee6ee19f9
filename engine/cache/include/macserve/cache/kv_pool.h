// KvPool: the only owner of KV memory. One K and one V tensor per layer in the paged layout of
// kernels/paged_kv.h, sized from a token budget.
#pragma once

#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/backend/kv_cache_view.h"
#include "macserve/cache/block_manager.h"
#include "macserve/core/model_config.h"

namespace macserve::cache {

// MAC ring memory requested with the pool (accounted in the same budget).
struct MacRingSpec {
  int64_t num_slots = 0;  // 0: MAC off, no rings
  int64_t window = 512;
  bool bf16 = true;
};

class KvPool {
 public:
  KvPool(backend::Backend& backend, const ModelConfig& config, int64_t num_blocks,
         int64_t block_size, MacRingSpec mac = {});
  const backend::KvCacheView& view() const { return view_; }
  int64_t num_blocks() const { return view_.layout.num_blocks; }
  int64_t bytes() const { return bytes_; }
  int64_t mac_ring_bytes() const { return ring_bytes_; }
  // Bytes of one request slot's MAC rings over all layers.
  static int64_t mac_ring_bytes_per_slot(const ModelConfig& config, const MacRingSpec& mac);
  // Copies whole blocks (all layers, K and V): the block manager's copy-on-write requests.
  void copy_blocks(const std::vector<BlockCopy>& copies);
  // Bytes of K+V for one token across all layers (backend kv_dtype: f32 on the CPU, bf16 on CUDA).
  static int64_t bytes_per_token(const ModelConfig& config, int64_t dtype_bytes);

 private:
  backend::Backend& backend_;
  backend::KvCacheView view_;
  int64_t bytes_ = 0;
  int64_t ring_bytes_ = 0;
};

}  // namespace macserve::cache
