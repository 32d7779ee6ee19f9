#include "macserve/cache/kv_pool.h"

namespace macserve::cache {

KvPool::KvPool(backend::Backend& backend, const ModelConfig& c, int64_t num_blocks,
               int64_t block_size, MacRingSpec mac)
    : backend_(backend) {
  view_.layout = {num_blocks, c.num_kv_heads, block_size, c.head_dim};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    view_.k.push_back(
        backend.alloc(backend.kv_dtype(), {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
    view_.v.push_back(
        backend.alloc(backend.kv_dtype(), {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
    bytes_ += static_cast<int64_t>(view_.k.back().nbytes() + view_.v.back().nbytes());
    if (mac.num_slots > 0)
      view_.mac_rings.push_back(
          backend.alloc_mac_ring(mac.num_slots, mac.window, c.num_q_heads, c.head_dim, mac.bf16));
  }
  ring_bytes_ = mac.num_slots * mac_ring_bytes_per_slot(c, mac);
}

void KvPool::copy_blocks(const std::vector<BlockCopy>& copies) {
  for (const BlockCopy& c : copies) {
    for (std::size_t l = 0; l < view_.k.size(); ++l) {
      backend_.copy(view_.k[l].slice_rows(c.src, c.src + 1),
                    view_.k[l].slice_rows(c.dst, c.dst + 1));
      backend_.copy(view_.v[l].slice_rows(c.src, c.src + 1),
                    view_.v[l].slice_rows(c.dst, c.dst + 1));
    }
  }
}

int64_t KvPool::mac_ring_bytes_per_slot(const ModelConfig& c, const MacRingSpec& mac) {
  const int64_t elem = mac.bf16 ? 2 : 4;
  return c.num_layers * mac.window * c.num_q_heads * (2 * c.head_dim * elem + 4);
}

int64_t KvPool::bytes_per_token(const ModelConfig& c, int64_t dtype_bytes) {
  return 2 * c.num_layers * c.num_kv_heads * c.head_dim * dtype_bytes;
}

}  // namespace macserve::cache
