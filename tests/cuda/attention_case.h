// One random paged-attention problem, run on the CPU oracle (float32 over the bf16-rounded cache)
// and on the CUDA backend: random block tables drawn from a shuffled pool, random K/V (filled on
// the device, then read back for the oracle), random queries.
#pragma once

#include <algorithm>
#include <cstring>
#include <numeric>

#include "cuda_test_util.h"

namespace macserve::testing {

struct AttentionCase {
  std::vector<int32_t> num_queries;   // per sequence
  std::vector<int32_t> context_lens;  // per sequence (>= num_queries)
  int64_t num_q_heads = 8, num_kv_heads = 2, head_dim = 128, block_size = 16;
  uint64_t seed = 1;
  int64_t max_query_len =
      -1;  // -1: the true longest chunk; 0 ("unknown") keeps 1-query steps off the decode kernel
  // Also run the call with f32 outputs (the kernel's own accuracy, not bf16 rounding) against the
  // same oracle, then `repeats` more times, each compared bit for bit with that first f32 run.
  bool f32_check = false;
  int repeats = 0;
};

struct AttentionResult {
  std::vector<float> gpu, cpu;
  double rel = 0.0;
  std::vector<float> gpu_f32;  // with f32_check: the f32-output run
  double rel_f32 = 0.0;
  int repeat_mismatches = 0;  // repeats whose output differed from the first f32 run in any bit
};

inline AttentionResult run_attention_case(backend::Backend& gpu, const AttentionCase& c) {
  const int64_t S = static_cast<int64_t>(c.context_lens.size());
  const int64_t bs = c.block_size, D = c.head_dim;
  std::vector<int32_t> qs{0};
  int64_t max_blocks = 1, total_blocks = 0, max_ctx = 0, max_q = 0;
  for (int64_t s = 0; s < S; ++s) {
    qs.push_back(qs.back() + c.num_queries[s]);
    const int64_t nb = (c.context_lens[s] + bs - 1) / bs;
    max_blocks = std::max(max_blocks, nb);
    total_blocks += nb;
    max_ctx = std::max<int64_t>(max_ctx, c.context_lens[s]);
    max_q = std::max<int64_t>(max_q, c.num_queries[s]);
  }
  const int64_t T = qs.back();
  const int64_t num_blocks = total_blocks + 3;
  std::vector<int32_t> pool(static_cast<std::size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(static_cast<uint32_t>(c.seed)));
  std::vector<int32_t> tables(static_cast<std::size_t>(S * max_blocks), 0);
  std::size_t next = 0;
  for (int64_t s = 0; s < S; ++s)
    for (int64_t b = 0; b < (c.context_lens[s] + bs - 1) / bs; ++b)
      tables[s * max_blocks + b] = pool[next++];

  const kernels::PagedKvLayout layout{num_blocks, c.num_kv_heads, bs, D};
  const std::vector<int64_t> cache_shape{num_blocks, c.num_kv_heads, bs, D};
  Tensor kc = gpu.alloc(DType::kBF16, cache_shape), vc = gpu.alloc(DType::kBF16, cache_shape);
  backend::cuda_fill_uniform(gpu, kc, c.seed * 3 + 1, 1.5f);
  backend::cuda_fill_uniform(gpu, vc, c.seed * 3 + 2, 1.0f);
  const auto q = randn(static_cast<std::size_t>(T * c.num_q_heads * D), c.seed * 3 + 3);

  backend::AttentionMeta gm;
  gm.query_start = to_device_raw(gpu, qs, DType::kI32);
  gm.context_lens = to_device_raw(gpu, c.context_lens, DType::kI32);
  gm.block_tables = to_device_raw(gpu, tables, DType::kI32);
  gm.num_seqs = S;
  gm.max_blocks_per_seq = max_blocks;
  gm.max_query_len = c.max_query_len >= 0 ? c.max_query_len : max_q;
  gm.max_context_len = max_ctx;
  Tensor qd = to_device(gpu, q, DType::kF32, {T, c.num_q_heads, D});
  Tensor out = gpu.alloc(DType::kBF16, {T, c.num_q_heads, D});
  poison(gpu, out);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  gpu.paged_attention(qd, kc, vc, out, gm, layout, scale);
  AttentionResult r;
  r.gpu = to_host(gpu, out);
  if (c.f32_check) {
    Tensor out32 = gpu.alloc(DType::kF32, {T, c.num_q_heads, D});
    for (int i = 0; i <= c.repeats; ++i) {
      poison(gpu, out32);
      gpu.paged_attention(qd, kc, vc, out32, gm, layout, scale);
      std::vector<float> got = to_host(gpu, out32);
      if (i == 0)
        r.gpu_f32 = std::move(got);
      else if (std::memcmp(got.data(), r.gpu_f32.data(), got.size() * sizeof(float)) != 0)
        ++r.repeat_mismatches;
    }
  }

  auto cpu = backend::make_cpu_backend();
  std::vector<float> kh = to_host(gpu, kc), vh = to_host(gpu, vc);
  backend::AttentionMeta cm;
  Tensor qs_h = Tensor::empty_host(DType::kI32, {S + 1}),
         cl_h = Tensor::empty_host(DType::kI32, {S});
  Tensor bt_h = Tensor::empty_host(DType::kI32, {S, max_blocks});
  std::copy(qs.begin(), qs.end(), qs_h.data_as<int32_t>());
  std::copy(c.context_lens.begin(), c.context_lens.end(), cl_h.data_as<int32_t>());
  std::copy(tables.begin(), tables.end(), bt_h.data_as<int32_t>());
  cm.query_start = qs_h;
  cm.context_lens = cl_h;
  cm.block_tables = bt_h;
  cm.num_seqs = S;
  cm.max_blocks_per_seq = max_blocks;
  Tensor out_h = Tensor::empty_host(DType::kF32, {T, c.num_q_heads, D});
  cpu->paged_attention(host_tensor(q, {T, c.num_q_heads, D}),
                       Tensor(kh.data(), DType::kF32, cache_shape),
                       Tensor(vh.data(), DType::kF32, cache_shape), out_h, cm, layout, scale);
  r.cpu.assign(out_h.data_as<float>(), out_h.data_as<float>() + out_h.numel());
  r.rel = rel_l2(r.gpu, r.cpu);
  if (c.f32_check) r.rel_f32 = rel_l2(r.gpu_f32, r.cpu);
  return r;
}

}  // namespace macserve::testing
