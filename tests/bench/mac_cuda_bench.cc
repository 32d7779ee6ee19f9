// MAC-Attention CUDA kernels (kernels/cuda/mac) vs the full-attention decode kernel (paged_decode)
// under CUDA-graph replay: batch x context x forced hit rate x (Hq 32, Hkv 8 | 4), head_dim 128,
// block size 16, random page order, random bf16 K/V (a 64 MiB random block copied over the cache),
// ring rows all valid, forced per-head hits (independent, or clustered per KV group) at lag 64
// (the benchmark hook mac_decode_forced_hits). One layer per step; graph of 10 steps, median of 5
// replays. CSV on stdout; mac_GBps counts the K/V bytes the MAC step read (mac_kv_frac of full
// attention's). The columns waves, chunk and rule are always 0, 0 and rounds8192 (adaptive chunks,
// the one rule left); they stay so the CSV keeps the columns of the recorded ones.
//   mac_cuda_bench [full|quick]
//     quick: batch {1,64} x context {32K,127K} x hit {0,0.5,0.95,1}
//   mac_cuda_bench profile HKV BATCH CONTEXT RATE: 3 eager MAC steps, then 3 eager full-attention
//     steps, nothing printed (for a kernel profiler such as ncu)
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string_view>
#include <vector>

#include "cuda_bench_util.h"
#include "macserve/kernels/cuda/attention.cuh"
#include "macserve/kernels/cuda/mac_attention_cuda.h"
#include "macserve/kernels/cuda/mac_force_hits_cuda.h"

using namespace macserve::kernels;

template <typename F>
float time_graph(cudaStream_t st, F&& step) {
  step();  // warm up
  CK(cudaStreamSynchronize(st));
  return median_graph_step_us(st, 10, 5, cudaStreamCaptureModeGlobal, step);
}

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::fprintf(stderr, "no CUDA device\n");
    return 0;
  }
  const std::string_view mode = argc > 1 ? argv[1] : "full";
  const bool quick = mode == "quick", profile = mode == "profile";
  if (!((mode == "full" || quick) && argc <= 2) && !(profile && argc == 6)) {
    std::fprintf(stderr, "usage: mac_cuda_bench [full|quick] | profile HKV BATCH CONTEXT RATE\n");
    return 2;
  }
  int sms = 0;
  CK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaStream_t st;
  CK(cudaStreamCreate(&st));
  const int64_t D = 128, Hq = 32, M = 512, max_S = 64, max_ctx = 130048;
  const int64_t blocks_per_seq = max_ctx / 16;
  const int64_t num_blocks = max_S * blocks_per_seq;
  const int64_t elems = num_blocks * 8 * 16 * D;  // sized for Hkv 8
  uint16_t *k, *v;
  CK(cudaMalloc(&k, elems * 2));
  CK(cudaMalloc(&v, elems * 2));
  {
    const int64_t chunk = 32LL << 20;  // 32M bf16 = 64 MiB of random values, copied over the cache
    std::vector<uint16_t> h(static_cast<size_t>(chunk));
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& x : h) {
      float f = nd(rng);
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      x = static_cast<uint16_t>(bits >> 16);
    }
    uint16_t* src;
    CK(cudaMalloc(&src, chunk * 2));
    CK(cudaMemcpy(src, h.data(), chunk * 2, cudaMemcpyHostToDevice));
    for (int64_t o = 0; o < elems; o += chunk) {
      CK(cudaMemcpy(k + o, src, std::min(chunk, elems - o) * 2, cudaMemcpyDeviceToDevice));
      CK(cudaMemcpy(v + o, src, std::min(chunk, elems - o) * 2, cudaMemcpyDeviceToDevice));
    }
    CK(cudaFree(src));
  }
  std::vector<int32_t> table(static_cast<size_t>(num_blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(2));
  int32_t *d_table, *d_ctx, *d_slots, *d_vf, *d_qs;
  CK(cudaMalloc(&d_table, num_blocks * 4));
  CK(cudaMemcpy(d_table, table.data(), num_blocks * 4, cudaMemcpyHostToDevice));
  CK(cudaMalloc(&d_ctx, max_S * 4));
  CK(cudaMalloc(&d_slots, max_S * 4));
  CK(cudaMalloc(&d_vf, max_S * 4));
  CK(cudaMalloc(&d_qs, (max_S + 1) * 4));
  std::vector<int32_t> slots(max_S), vf(max_S, 0), qs(max_S + 1);
  std::iota(slots.begin(), slots.end(), 0);
  std::iota(qs.begin(), qs.end(), 0);
  CK(cudaMemcpy(d_slots, slots.data(), max_S * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_vf, vf.data(), max_S * 4, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(d_qs, qs.data(), (max_S + 1) * 4, cudaMemcpyHostToDevice));
  float *q_post, *q_pre, *out, *ring_lse;
  CK(cudaMalloc(&q_post, max_S * Hq * D * 4));
  CK(cudaMalloc(&q_pre, max_S * Hq * D * 4));
  CK(cudaMalloc(&out, max_S * Hq * D * 4));
  {
    std::vector<float> h(static_cast<size_t>(max_S * Hq * D));
    std::mt19937 rng(3);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (auto& x : h) x = nd(rng);
    CK(cudaMemcpy(q_post, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(q_pre, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  }
  const int64_t ring_rows = max_S * M * Hq;
  uint16_t *ring_q, *ring_o;
  CK(cudaMalloc(&ring_q, ring_rows * D * 2));
  CK(cudaMalloc(&ring_o, ring_rows * D * 2));
  CK(cudaMemcpy(ring_q, k, ring_rows * D * 2, cudaMemcpyDeviceToDevice));
  CK(cudaMemcpy(ring_o, v, ring_rows * D * 2, cudaMemcpyDeviceToDevice));
  CK(cudaMalloc(&ring_lse, ring_rows * 4));
  {
    std::vector<float> h(static_cast<size_t>(ring_rows), 5.0f);
    CK(cudaMemcpy(ring_lse, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
  }
  MacHeadDecision* dec;
  CK(cudaMalloc(&dec, max_S * Hq * sizeof(MacHeadDecision)));
  cuda::MacCounters* counters;
  CK(cudaMalloc(&counters, sizeof(cuda::MacCounters)));
  int64_t ws_bytes = 0;  // adaptive chunks
  for (int64_t hkv : {8, 4})
    ws_bytes = std::max(ws_bytes, cuda::mac_workspace_bytes(max_S, Hq, hkv, D, max_ctx, 0));
  void* ws;
  CK(cudaMalloc(&ws, ws_bytes));
  float* dws;
  CK(cudaMalloc(&dws, 64LL * Hq * 1024 * (D + 1) * 4));

  std::printf(
      "hkv,batch,context,hit_rate,dist,waves,chunk,mac_us,full_us,ratio_full_over_mac,full_GBps,"
      "mac_GBps,"
      "mac_kv_frac,hits,rule\n");
  std::vector<int64_t> hkvs{8, 4};
  std::vector<int> batches = quick ? std::vector<int>{1, 64} : std::vector<int>{1, 16, 64};
  std::vector<int> ctxs =
      quick ? std::vector<int>{32768, 130048} : std::vector<int>{32768, 65536, 98304, 130048};
  std::vector<float> rates = quick ? std::vector<float>{0.0f, 0.5f, 0.95f, 1.0f}
                                   : std::vector<float>{0.0f, 0.5f, 0.9f, 0.95f, 1.0f};
  if (profile) {
    hkvs = {std::atoi(argv[2])};
    batches = {std::atoi(argv[3])};
    ctxs = {std::atoi(argv[4])};
    rates = {static_cast<float>(std::atof(argv[5]))};
    if ((hkvs[0] != 8 && hkvs[0] != 4) || batches[0] < 1 || batches[0] > max_S || ctxs[0] < 1 ||
        ctxs[0] > max_ctx) {
      std::fprintf(stderr, "profile: HKV 8|4, BATCH 1..%lld, CONTEXT 1..%lld\n", (long long)max_S,
                   (long long)max_ctx);
      return 2;
    }
  }
  // graph replay timing, or (profile) three eager steps
  auto measure = [&](auto&& step) -> float {
    if (!profile) return time_graph(st, step);
    for (int i = 0; i < 3; ++i) step();
    CK(cudaStreamSynchronize(st));
    return 1.0f;
  };
  for (int64_t Hkv : hkvs) {
    PagedKvLayout L{num_blocks, Hkv, 16, D};
    for (int S : batches)
      for (int ctx : ctxs) {
        std::vector<int32_t> c(static_cast<size_t>(S), ctx);
        CK(cudaMemcpy(d_ctx, c.data(), S * 4, cudaMemcpyHostToDevice));
        cuda::PagedAttentionCudaParams pp{};
        pp.q = q_post, pp.k_cache = k, pp.v_cache = v, pp.out = out, pp.out_bf16 = true;
        pp.query_start = d_qs, pp.context_lens = d_ctx, pp.block_tables = d_table;
        pp.num_seqs = S, pp.num_tokens = S, pp.max_blocks_per_seq = blocks_per_seq,
        pp.num_q_heads = Hq;
        pp.scale = 1.0f / std::sqrt(128.0f), pp.layout = L;
        const cuda::DecodePlan plan = cuda::plan_decode(pp, ctx, sms);
        const float full_us = measure([&] { cuda::paged_decode(pp, plan, dws, st); });
        const double bytes = static_cast<double>(S) * ctx * Hkv * D * 2 * 2;
        for (float rate : rates)
          for (bool clustered : {false, true}) {
            if (clustered && (rate == 0.0f || profile)) continue;  // = independent at 0
            cuda::MacForceHits force;
            force.hit_rate = rate, force.clustered = clustered, force.seed = 11, force.lag = 64;
            cuda::MacCudaParams p{};
            p.q_post = q_post, p.q_pre = q_pre, p.k_cache = k, p.v_cache = v, p.out = out,
            p.out_bf16 = true;
            p.context_lens = d_ctx, p.block_tables = d_table, p.ring_slots = d_slots,
            p.ring_valid_from = d_vf;
            p.num_seqs = S, p.max_blocks_per_seq = blocks_per_seq, p.num_q_heads = Hq;
            p.scale = pp.scale, p.layout = L;
            p.cfg.gen_min = 0;
            p.ring = MacRing{ring_q, ring_o, ring_lse, max_S};
            p.decisions = dec, p.counters = counters;
            p.chunk_tokens = 0;  // adaptive, as the backend runs it
            const cuda::MacWorkspace w{ws, ws_bytes};
            CK(cudaMemset(counters, 0, sizeof(cuda::MacCounters)));
            if (cuda::mac_decode_forced_hits(p, force, w, ctx, st) != 0) {
              std::fprintf(stderr, "mac_decode failed\n");
              return 1;
            }
            cuda::MacCounters cnt;
            CK(cudaMemcpy(&cnt, counters, sizeof(cnt), cudaMemcpyDeviceToHost));
            p.counters = nullptr;
            const float mac_us =
                measure([&] { cuda::mac_decode_forced_hits(p, force, w, ctx, st); });
            const double kv_frac = static_cast<double>(cnt.kv_tokens_read) / cnt.kv_tokens_full;
            std::printf("%lld,%d,%d,%.2f,%s,%.1f,%d,%.1f,%.1f,%.2f,%.0f,%.0f,%.3f,%.3f,%s\n",
                        (long long)Hkv, S, ctx, rate, clustered ? "group" : "head", 0.0,
                        p.chunk_tokens, mac_us, full_us, full_us / mac_us, bytes / (full_us * 1e3),
                        kv_frac * bytes / (mac_us * 1e3), kv_frac,
                        static_cast<double>(cnt.hit_heads) / cnt.heads, "rounds8192");
            std::fflush(stdout);
          }
      }
  }
  CK(cudaGetLastError());
  return 0;
}
