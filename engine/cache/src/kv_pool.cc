#include "macserve/cache/kv_pool.h"

namespace macserve::cache {

KvPool::KvPool(backend::Backend& backend, const ModelConfig& c, int64_t num_blocks, int64_t block_size) {
  view_.layout = {num_blocks, c.num_kv_heads, block_size, c.head_dim};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    view_.k.push_back(backend.alloc(DType::kF32, {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
    view_.v.push_back(backend.alloc(DType::kF32, {num_blocks, c.num_kv_heads, block_size, c.head_dim}));
    bytes_ += static_cast<int64_t>(view_.k.back().nbytes() + view_.v.back().nbytes());
  }
}

int64_t KvPool::bytes_per_token(const ModelConfig& c, int64_t dtype_bytes) {
  return 2 * c.num_layers * c.num_kv_heads * c.head_dim * dtype_bytes;
}

}  // namespace macserve::cache
