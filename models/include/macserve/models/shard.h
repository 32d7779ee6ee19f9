// Tensor parallelism (issue 22): which slice of a model rank r of N holds, Megatron style. Q/K/V
// and gate/up are split by output rows (whole heads; a rank's q heads with the KV heads they read,
// a KV head copied to several ranks when there are fewer KV heads than ranks), o_proj and down_proj
// by input columns (each rank's partial sum, then an all-reduce), the embedding and lm_head by
// vocabulary rows (zero rows for other ranks' tokens + all-reduce; logits slices all-gathered).
#pragma once

#include <cstdint>

#include "macserve/backend/communicator.h"
#include "macserve/core/model_config.h"

namespace macserve::models {

struct Shard {
  int rank = 0;
  int size = 1;
  backend::Communicator* comm = nullptr;  // required when size > 1
};

// [begin, end) of a dimension.
struct SliceRange {
  int64_t begin = 0, end = 0;
  int64_t size() const { return end - begin; }
};

struct ShardLayout {
  SliceRange q_heads, kv_heads;  // heads (kv_heads are replicated when Hkv < N)
  SliceRange intermediate;       // MLP rows of gate/up, columns of down_proj
  SliceRange vocab;              // embedding and lm_head rows
};

// Throws Error(kInvalidArgument) unless size is 1, 2, 4 or 8 (--tensor-parallel-size).
void check_tensor_parallel_size(int size);
// Throws Error(kInvalidArgument) naming the model's shape when it cannot be split over `size`
// ranks: size not 1, 2, 4 or 8; query heads not divisible by size; KV heads neither a multiple
// nor a divisor of size.
void check_tensor_parallel(const ModelConfig& c, int size);
// Rank `rank`'s slices; the MLP and vocabulary split as evenly as they go (the first ranks get no
// fewer rows than the later ones).
ShardLayout shard_layout(const ModelConfig& c, int rank, int size);
// The shapes one rank runs: num_q_heads, num_kv_heads, intermediate_size and vocab_size of its
// slices (what its KV pool, MAC rings and workspace are sized by); the rest as `c`.
ModelConfig shard_config(const ModelConfig& c, const ShardLayout& layout);

}  // namespace macserve::models
