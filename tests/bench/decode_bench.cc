// Bandwidth of the split-KV paged decode kernel (CudaBackend::paged_attention on a decode step):
// batch {1,16,64} x context {32K,64K,96K,127K} x (Hq 32, Hkv 8) and (Hq 32, Hkv 4), head_dim 128,
// block size 16, random page order, random bf16 K/V. Timed as CUDA-graph replay of 20 launches,
// median of 7 replays; bytes = the K/V the step must read. Prints CSV on stdout.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "cuda_bench_util.h"
#include "macserve/backend/backend.h"
#include "macserve/backend/cuda_backend.h"

using namespace macserve;

int main() {
  std::string why;
  auto gpu = backend::make_cuda_backend(&why);
  if (!gpu) {
    std::fprintf(stderr, "no CUDA device: %s\n", why.c_str());
    return 0;
  }
  auto st = static_cast<cudaStream_t>(backend::cuda_stream(*gpu));
  const int64_t D = 128, bs = 16, Hq = 32, max_tokens = 64 * 130048;
  const int64_t max_elems = max_tokens * 8 * D;  // Hkv 8
  Tensor kbuf = gpu->alloc(DType::kBF16, {max_elems}), vbuf = gpu->alloc(DType::kBF16, {max_elems});
  backend::cuda_fill_uniform(*gpu, kbuf, 1, 1.5f);
  backend::cuda_fill_uniform(*gpu, vbuf, 2, 1.0f);
  std::printf("layout,hq,hkv,batch,context,us,kv_bytes,tb_per_s,fraction_of_4.52\n");
  for (int64_t hkv : {8, 4}) {
    for (int64_t batch : {1, 16, 64}) {
      for (int64_t ctx : {32768, 65536, 98304, 130048}) {
        const int64_t pages_per_seq = ctx / bs, num_blocks = max_elems / (hkv * bs * D);
        const kernels::PagedKvLayout layout{num_blocks, hkv, bs, D};
        std::vector<int32_t> pool(static_cast<std::size_t>(num_blocks));
        std::iota(pool.begin(), pool.end(), 0);
        std::shuffle(pool.begin(), pool.end(),
                     std::mt19937(static_cast<uint32_t>(batch * 7 + ctx)));
        std::vector<int32_t> tables(pool.begin(), pool.begin() + batch * pages_per_seq);
        std::vector<int32_t> qs(batch + 1), cl(batch, static_cast<int32_t>(ctx));
        std::iota(qs.begin(), qs.end(), 0);
        backend::AttentionMeta m;
        m.query_start = gpu->alloc(DType::kI32, {batch + 1});
        m.context_lens = gpu->alloc(DType::kI32, {batch});
        m.block_tables = gpu->alloc(DType::kI32, {batch, pages_per_seq});
        gpu->copy_from_host(qs.data(), m.query_start);
        gpu->copy_from_host(cl.data(), m.context_lens);
        gpu->copy_from_host(tables.data(), m.block_tables);
        m.num_seqs = batch;
        m.max_blocks_per_seq = pages_per_seq;
        m.max_query_len = 1;
        m.max_context_len = ctx;
        const std::vector<int64_t> shape{num_blocks, hkv, bs, D};
        Tensor kc = kbuf.reshape(shape), vc = vbuf.reshape(shape);
        Tensor q = gpu->alloc(DType::kF32, {batch, Hq, D}),
               out = gpu->alloc(DType::kBF16, {batch, Hq, D});
        backend::cuda_fill_uniform(*gpu, q, 3, 1.0f);
        const float scale = 1.0f / std::sqrt(static_cast<float>(D));
        gpu->paged_attention(q, kc, vc, out, m, layout,
                             scale);  // warm-up: plan, workspace, attributes
        gpu->synchronize();
        const double us = median_graph_step_us(st, 20, 7, cudaStreamCaptureModeThreadLocal, [&] {
          gpu->paged_attention(q, kc, vc, out, m, layout, scale);
        });
        const double bytes = double(batch) * ctx * hkv * D * 2 * 2;
        const double tbs = bytes / (us * 1e-6) / 1e12;
        std::printf("GQA-%lld,%lld,%lld,%lld,%lld,%.1f,%.0f,%.3f,%.3f\n",
                    static_cast<long long>(Hq / hkv), static_cast<long long>(Hq),
                    static_cast<long long>(hkv), static_cast<long long>(batch),
                    static_cast<long long>(ctx), us, bytes, tbs, tbs / 4.52);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
