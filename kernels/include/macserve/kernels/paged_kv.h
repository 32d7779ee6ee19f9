// The paged KV cache layout shared by every attention kernel, CPU and CUDA:
//   k_cache, v_cache: [num_blocks, num_kv_heads, block_size, head_dim]
// so one block of one head is contiguous (block_size * head_dim elements: 4 KiB in bf16 at 16 x
// 128). A sequence's token t lives in block block_table[t / block_size], row t % block_size. slot =
// block_id * block_size + row.
#pragma once

#include "macserve/kernels/common.h"

namespace macserve::kernels {

struct PagedKvLayout {
  int64_t num_blocks;
  int64_t num_kv_heads;
  int64_t block_size;
  int64_t head_dim;

  int64_t block_stride() const { return num_kv_heads * block_size * head_dim; }
  int64_t head_stride() const { return block_size * head_dim; }
  // Element offset of (slot, head) in a cache tensor.
  int64_t offset(int64_t slot, int64_t head) const {
    return (slot / block_size) * block_stride() + head * head_stride() +
           (slot % block_size) * head_dim;
  }
};

}  // namespace macserve::kernels
