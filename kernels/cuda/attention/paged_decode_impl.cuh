// The split-KV paged decode kernel (internal header; instantiated per head_dim in
// paged_decode_d{64,128}.cu). See macserve/kernels/cuda/attention.cuh for the contract.
//
// CTA = 4 warps = one (split, kv head, sequence). Each warp walks its own pages of the split
// (page p of the split goes to warp p % 4) through a private 3-stage shared-memory ring filled by
// 16-byte cp.async: K and V of one page (16 rows x head_dim bf16, 4 KiB each at head_dim 128) are
// contiguous, so a warp's loads are fully coalesced. A lane always reads back exactly the chunks it
// copied itself, so cp.async.wait_group alone orders the ring (no barriers in the main loop). Lane
// (row group r, chunk c) owns 8 dims of one row per pass; the group's G queries live in registers
// (pre-scaled by scale * log2 e), so one K/V load serves every q head of the group. Online softmax in
// base 2 per warp; the 4 warps merge through shared memory at the end; with several splits the CTA
// writes a normalised partial output and its log2-sum-exp for the combine kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>

#include "../cuda_util.cuh"
#include "macserve/kernels/cuda/attention.cuh"

namespace macserve::kernels::cuda::decode_detail {

constexpr int kWarps = 4;
constexpr int kStages = 3;
constexpr int kPage = 16;

template <int D>
constexpr size_t smem_bytes() {
  return size_t{kWarps} * kStages * 2 * kPage * D * 2;  // K and V pages in bf16
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

__device__ __forceinline__ void unpack8(const uint4& raw, float* f) {
  const auto* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 v = __bfloat1622float2(h[i]);
    f[2 * i] = v.x;
    f[2 * i + 1] = v.y;
  }
}

// This lane's 8 dims (chunk c = lane % (D / 8)) of the G query heads at q ([G][D] f32), times qscale.
template <int D, int G>
__device__ __forceinline__ void load_queries(const float* q, float qscale, float (&qf)[G][8]) {
  const int c = (threadIdx.x % 32) % (D / 8);
#pragma unroll
  for (int g = 0; g < G; ++g) {
    const float4* qp = reinterpret_cast<const float4*>(q + g * D + c * 8);
    const float4 a = qp[0], b = qp[1];
    qf[g][0] = a.x * qscale; qf[g][1] = a.y * qscale; qf[g][2] = a.z * qscale; qf[g][3] = a.w * qscale;
    qf[g][4] = b.x * qscale; qf[g][5] = b.y * qscale; qf[g][6] = b.z * qscale; qf[g][7] = b.w * qscale;
  }
}

// Online-softmax attention of KV head kvh's G query heads over keys [b, e) of one sequence (its
// block table `table`), run by the whole CTA of kWarps warps. Warp w walks pages w, w + kWarps, ...
// of the range through its 3-stage ring in smem (smem_bytes<D>(), reused for the final merge, so
// the call starts and ends with a barrier). qf: this lane's dims of the queries, pre-scaled by
// scale * log2 e. kMasked: head g also skips keys j < lo[g]. Rows outside [b, e) are never used
// (their K/V may be anything, NaN included). Ends with store(g, d, o, lse2) for every (g, d) of
// the group, o normalised (0 without any key), lse2 the base-2 log-sum-exp (-inf without any key).
template <int D, int G, bool kMasked, class Store>
__device__ __forceinline__ void attend_keys(uint4* smem, const float (&qf)[G][8], const int32_t* table,
                                            const void* k_cache, const void* v_cache, int Hkv, int kvh, int b,
                                            int e, const int (&lo)[G], Store&& store) {
  constexpr int kCpr = D / 8;          // 16-byte chunks per row
  constexpr int kRpp = 32 / kCpr;      // rows per pass of a warp
  constexpr int kPasses = kPage / kRpp;
  constexpr int kPageChunks = kPage * kCpr;
  constexpr int kSub = (G > 4 && kPasses >= 8) ? 2 : 1;  // softmax updates per page
  constexpr int kPs = kPasses / kSub;                    // passes per update
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int c = lane % kCpr, rg = lane / kCpr;
  const auto* kc = static_cast<const uint4*>(k_cache);
  const auto* vc = static_cast<const uint4*>(v_cache);

  float m[G], l[G], acc[G][8];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j) acc[g][j] = 0.0f;
  }

  __syncthreads();  // the ring may still hold the previous call's merge
  const int p_end = e > b ? (e + kPage - 1) / kPage : 0;
  const int first = b / kPage + warp;
  const int nk = first < p_end ? (p_end - first + kWarps - 1) / kWarps : 0;
  uint4* ring = smem + static_cast<size_t>(warp) * kStages * 2 * kPageChunks;
  auto issue = [&](int k) {
    const int page = first + k * kWarps;
    const int64_t blk = table[page];
    const int64_t base = (blk * Hkv + kvh) * kPageChunks;  // in 16-byte chunks
    uint4* dst = ring + (k % kStages) * 2 * kPageChunks;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      cp_async16(dst + lane + 32 * i, kc + base + lane + 32 * i);
      cp_async16(dst + kPageChunks + lane + 32 * i, vc + base + lane + 32 * i);
    }
  };
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) {
    if (st < nk) issue(st);
    cp_async_commit();
  }
  int lo_max = b;  // keys from here on are unmasked for every head
  if constexpr (kMasked) {
#pragma unroll
    for (int g = 0; g < G; ++g) lo_max = max(lo_max, lo[g]);
  }
  // One page: scores, online softmax, P x V. kCheck: the page crosses the range's ends or a head's
  // lower bound, so rows are tested one by one; pages wholly inside skip every test (most pages:
  // the loop is issue bound at larger groups, so the tests would cost throughput).
  auto page = [&](const uint4* ks, const uint4* vs, int row0, auto check) {
    constexpr bool kCheck = decltype(check)::value;
    // Large groups update the softmax twice per page so the scores stay in registers (no spills).
#pragma unroll
    for (int sub = 0; sub < kSub; ++sub) {
      float s[G][kPs];
#pragma unroll
      for (int ii = 0; ii < kPs; ++ii) {
        const int i = sub * kPs + ii;
        float kf[8];
        unpack8(ks[lane + 32 * i], kf);
        const int row = row0 + i * kRpp + rg;
        const bool valid = !kCheck || (row >= b && row < e);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          float part = 0.0f;
#pragma unroll
          for (int j = 0; j < 8; ++j) part = fmaf(qf[g][j], kf[j], part);
#pragma unroll
          for (int o = kCpr / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
          if constexpr (kCheck) s[g][ii] = valid && (!kMasked || row >= lo[g]) ? part : -INFINITY;
          else s[g][ii] = part;
        }
      }
      if (kCheck && row0 + sub * kPs * kRpp >= e) break;  // the rest of the page is past the range
#pragma unroll
      for (int g = 0; g < G; ++g) {
        float pm = s[g][0];
#pragma unroll
        for (int ii = 1; ii < kPs; ++ii) pm = fmaxf(pm, s[g][ii]);
#pragma unroll
        for (int o = kCpr; o < 32; o <<= 1) pm = fmaxf(pm, __shfl_xor_sync(0xffffffffu, pm, o));
        const float m_new = fmaxf(m[g], pm);
        // every key so far masked: keep the state empty (exp2(-inf - -inf) would be NaN)
        const float m_safe = kCheck && m_new == -INFINITY ? 0.0f : m_new;
        const float corr = exp2f(m[g] - m_safe);
        m[g] = m_new;
        l[g] *= corr;
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[g][j] *= corr;
#pragma unroll
        for (int ii = 0; ii < kPs; ++ii) {
          s[g][ii] = exp2f(s[g][ii] - m_safe);
          l[g] += s[g][ii];
        }
      }
#pragma unroll
      for (int ii = 0; ii < kPs; ++ii) {
        const int i = sub * kPs + ii;
        float vf[8];
        unpack8(vs[lane + 32 * i], vf);
        if constexpr (kCheck) {
          const int row = row0 + i * kRpp + rg;
          if (row < b || row >= e) {  // rows outside the range may hold anything (NaN too)
#pragma unroll
            for (int j = 0; j < 8; ++j) vf[j] = 0.0f;
          }
        }
#pragma unroll
        for (int g = 0; g < G; ++g)
#pragma unroll
          for (int j = 0; j < 8; ++j) acc[g][j] = fmaf(s[g][ii], vf[j], acc[g][j]);
      }
    }
  };
  for (int k = 0; k < nk; ++k) {
    if (k + kStages - 1 < nk) issue(k + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    const uint4* ks = ring + (k % kStages) * 2 * kPageChunks;
    const int row0 = (first + k * kWarps) * kPage;
    if (row0 >= lo_max && row0 + kPage <= e) page(ks, ks + kPageChunks, row0, std::false_type{});
    else page(ks, ks + kPageChunks, row0, std::true_type{});
  }
  cp_async_wait<0>();

  // Sum the row groups of the warp, then merge the warps through shared memory.
#pragma unroll
  for (int g = 0; g < G; ++g) {
#pragma unroll
    for (int o = kCpr; o < 32; o <<= 1) {
      l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
      for (int j = 0; j < 8; ++j) acc[g][j] += __shfl_xor_sync(0xffffffffu, acc[g][j], o);
    }
  }
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
  float* red_m = red;                       // [kWarps][G]
  float* red_l = red_m + kWarps * G;        // [kWarps][G]
  float* red_acc = red_l + kWarps * G;      // [kWarps][G][D]
  if (rg == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g)
#pragma unroll
      for (int j = 0; j < 8; ++j) red_acc[(warp * G + g) * D + c * 8 + j] = acc[g][j];
  }
  if (lane == 0) {
#pragma unroll
    for (int g = 0; g < G; ++g) {
      red_m[warp * G + g] = m[g];
      red_l[warp * G + g] = l[g];
    }
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < G * D; idx += kWarps * 32) {
    const int g = idx / D, d = idx % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) M = fmaxf(M, red_m[w * G + g]);
    float L = 0.0f, O = 0.0f;
    if (M != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float f = exp2f(red_m[w * G + g] - M);
        L += red_l[w * G + g] * f;
        O += red_acc[(w * G + g) * D + d] * f;
      }
    }
    store(g, d, L > 0.0f ? O / L : 0.0f, L > 0.0f ? M + log2f(L) : -INFINITY);
  }
  __syncthreads();  // the merge area is the next call's ring
}

// Reduction area of attend_keys' final merge, in floats; must fit in smem_bytes<D>().
template <int D, int G>
constexpr size_t merge_floats() {
  return size_t{kWarps} * G * (D + 2);
}

template <int D, int G>
__global__ void __launch_bounds__(kWarps * 32) decode_kernel(PagedAttentionCudaParams p, int pages_per_split,
                                                             int num_splits, float* ws_o, float* ws_lse) {
  static_assert(merge_floats<D, G>() * 4 <= smem_bytes<D>(), "merge area fits the ring");
  extern __shared__ uint4 smem[];
  const int split = blockIdx.x, kvh = blockIdx.y, seq = blockIdx.z;
  const int Hq = static_cast<int>(p.num_q_heads), Hkv = static_cast<int>(p.layout.num_kv_heads);
  const int ctx = p.context_lens[seq];
  const int t = p.query_start[seq];
  float qf[G][8];
  load_queries<D, G>(p.q + (static_cast<int64_t>(t) * Hq + kvh * G) * D, p.scale * 1.4426950408889634f, qf);
  const int lo[G] = {};
  const int b = split * pages_per_split * kPage;
  const int e = min(ctx, b + pages_per_split * kPage);
  attend_keys<D, G, false>(smem, qf, p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq, p.k_cache,
                           p.v_cache, Hkv, kvh, b, e, lo, [&](int g, int d, float o, float lse2) {
                             const int h = kvh * G + g;
                             if (num_splits == 1) {
                               detail::store(p.out, p.out_bf16, (static_cast<int64_t>(t) * Hq + h) * D + d, o);
                             } else {
                               const int64_t slot = (static_cast<int64_t>(seq) * Hq + h) * num_splits + split;
                               ws_o[slot * D + d] = o;
                               if (d == 0) ws_lse[slot] = lse2;
                             }
                           });
}

template <int D, int G>
int launch(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o, float* ws_lse, cudaStream_t st) {
  constexpr size_t kSmem = smem_bytes<D>();
  static bool configured = false;
  if (!configured) {
    const cudaError_t e = cudaFuncSetAttribute(decode_kernel<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(kSmem));
    if (e != cudaSuccess) return static_cast<int>(e);
    configured = true;
  }
  dim3 grid(static_cast<unsigned>(plan.num_splits), static_cast<unsigned>(p.layout.num_kv_heads),
            static_cast<unsigned>(p.num_seqs));
  decode_kernel<D, G><<<grid, kWarps * 32, kSmem, st>>>(p, plan.pages_per_split, plan.num_splits, ws_o, ws_lse);
  return static_cast<int>(cudaGetLastError());
}

template <int D>
int dispatch_group(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o, float* ws_lse,
                   cudaStream_t st) {
  return detail::with_group_size(p.num_q_heads / p.layout.num_kv_heads, static_cast<int>(cudaErrorInvalidValue),
                                 [&](auto g) { return launch<D, decltype(g)::value>(p, plan, ws_o, ws_lse, st); });
}

int dispatch_d64(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o, float* ws_lse, cudaStream_t st);
int dispatch_d128(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o, float* ws_lse, cudaStream_t st);

}  // namespace macserve::kernels::cuda::decode_detail
