// Tensor-parallel slices of a model (shard.h).
#include "macserve/models/shard.h"

#include "macserve/core/error.h"

namespace macserve::models {
namespace {

SliceRange even_split(int64_t n, int rank, int size) {
  return {n * rank / size, n * (rank + 1) / size};
}

}  // namespace

void check_tensor_parallel_size(int size) {
  if (size != 1 && size != 2 && size != 4 && size != 8)
    throw_error(ErrorCode::kInvalidArgument, "--tensor-parallel-size must be 1, 2, 4 or 8, got {}",
                size);
}

void check_tensor_parallel(const ModelConfig& c, int size) {
  check_tensor_parallel_size(size);
  if (c.num_q_heads % size != 0)
    throw_error(ErrorCode::kInvalidArgument,
                "--tensor-parallel-size {}: the model's {} query heads do not divide over {} ranks",
                size, c.num_q_heads, size);
  if (c.num_kv_heads % size != 0 && size % c.num_kv_heads != 0)
    throw_error(ErrorCode::kInvalidArgument,
                "--tensor-parallel-size {}: the model's {} KV heads neither divide over {} ranks "
                "nor divide {} (to be replicated)",
                size, c.num_kv_heads, size, size);
  if (c.intermediate_size < size || c.vocab_size < size)
    throw_error(ErrorCode::kInvalidArgument,
                "--tensor-parallel-size {}: intermediate size {} or vocabulary {} is smaller", size,
                c.intermediate_size, c.vocab_size);
}

ShardLayout shard_layout(const ModelConfig& c, int rank, int size) {
  check_tensor_parallel(c, size);
  MACSERVE_CHECK(0 <= rank && rank < size, "rank {} of {}", rank, size);
  ShardLayout l;
  const int64_t q_per_rank = c.num_q_heads / size;
  l.q_heads = {q_per_rank * rank, q_per_rank * (rank + 1)};
  if (c.num_kv_heads >= size) {
    const int64_t kv_per_rank = c.num_kv_heads / size;
    l.kv_heads = {kv_per_rank * rank, kv_per_rank * (rank + 1)};
  } else {  // fewer KV heads than ranks: the one KV head this rank's q heads share, replicated
    const int64_t group = c.num_q_heads / c.num_kv_heads;
    l.kv_heads = {l.q_heads.begin / group, l.q_heads.begin / group + 1};
  }
  l.intermediate = even_split(c.intermediate_size, rank, size);
  l.vocab = even_split(c.vocab_size, rank, size);
  return l;
}

ModelConfig shard_config(const ModelConfig& c, const ShardLayout& layout) {
  ModelConfig s = c;
  s.num_q_heads = layout.q_heads.size();
  s.num_kv_heads = layout.kv_heads.size();
  s.intermediate_size = layout.intermediate.size();
  s.vocab_size = layout.vocab.size();
  return s;
}

}  // namespace macserve::models
