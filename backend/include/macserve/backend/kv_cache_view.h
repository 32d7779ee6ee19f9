// KvCacheView: the paged KV cache of every layer as backend tensors. The KV pool (engine/cache)
// owns the memory and hands this view to the model, which only reads and writes through it.
#pragma once

#include <vector>

#include "macserve/core/tensor.h"
#include "macserve/kernels/mac_attention.h"
#include "macserve/kernels/paged_kv.h"

namespace macserve::backend {

struct KvCacheView {
  std::vector<Tensor> k;  // per layer: [num_blocks, num_kv_heads, block_size, head_dim]
  std::vector<Tensor> v;
  kernels::PagedKvLayout layout{};
  std::vector<kernels::MacRing> mac_rings;  // per layer; empty when MAC is off
};

}  // namespace macserve::backend
