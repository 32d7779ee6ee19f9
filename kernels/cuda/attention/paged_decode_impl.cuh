// The split-KV paged decode kernel (internal header; instantiated per head_dim in
// paged_decode_d{64,128}.cu). See macserve/kernels/cuda/attention.cuh for the contract.
//
// CTA = 4 warps = one (split, kv head, sequence). Each warp walks its own pages of the split
// (page p of the split goes to warp p % 4) through a private 3-stage shared-memory ring filled by
// 16-byte cp.async: K and V of one page (16 rows x head_dim bf16, 4 KiB each at head_dim 128) are
// contiguous, so a warp's loads are fully coalesced; they land swizzled so ldmatrix reads them
// without bank conflicts. The scores and P x V run on the tensor cores (mma.m16n8k16, bf16 in, fp32
// accumulate): the group's G query heads are the rows of the A operand, each query value split into
// three bf16 terms (as precise as fp32) and each probability into two (rows h and h + 8). Online
// softmax in base 2 per warp on the score fragments; the 4 warps merge through shared memory at the
// end; with several splits the CTA writes a normalised partial output and its log2-sum-exp for the
// combine kernel.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <type_traits>

#include "../cuda_util.cuh"
#include "../mma.cuh"
#include "macserve/kernels/cuda/attention.cuh"

namespace macserve::kernels::cuda::decode_detail {

constexpr int kWarps = 4;
constexpr int kStages = 3;
constexpr int kPage = 16;

template <int D>
constexpr size_t smem_bytes() {
  return size_t{kWarps} * kStages * 2 * kPage * D * 2;  // K and V pages in bf16
}

using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::ldmatrix_x4;
using detail::mma_bf16;
using detail::swizzle;

// x and y as bf16 pairs: *hi = (bf16(x), bf16(y)), *lo = the bf16 of what rounding left (hi + lo
// keeps ~16 significant bits).
__device__ __forceinline__ void split_bf16(float x, float y, uint32_t* hi, uint32_t* lo) {
  const __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
  const float2 hf = __bfloat1622float2(h);
  const __nv_bfloat162 l = __floats2bfloat162_rn(x - hf.x, y - hf.y);
  *hi = *reinterpret_cast<const uint32_t*>(&h);
  *lo = *reinterpret_cast<const uint32_t*>(&l);
}

// The G query heads of a KV group as A operands of m16n8k16 (per 16 dims). Each value is split into
// three bf16 terms, hi + mid + lo (~24 significant bits, as fp32): in `a` row h < 8 of the 16 is
// head h's hi term and row h + 8 its mid term; in `l` (rows 0-7 only, rows 8-15 zero) its lo term.
// Two mma then yield each score as fp32 would (padding rows h >= G are zero). Lane (h = lane / 4,
// t = lane % 4) holds dims 16k + 2t, +1, +8, +9 of head h.
template <int D>
struct QFrag {
  uint32_t a[D / 16][4];
  uint32_t l[D / 16][4];  // [1] and [3] stay zero
};

// Loads q ([G][D] f32) times qscale into the fragments.
template <int D, int G>
__device__ __forceinline__ void load_queries(const float* q, float qscale, QFrag<D>& qa) {
  static_assert(G >= 1 && G <= 8, "the 8 rows of the fragment hold the group's heads");
  const int lane = threadIdx.x % 32, h = lane / 4, t = lane % 4;
#pragma unroll
  for (int k = 0; k < D / 16; ++k) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {  // dims 16k + 2t (+1), then 16k + 8 + 2t (+1)
      float2 x = make_float2(0.0f, 0.0f);
      if (h < G) x = *reinterpret_cast<const float2*>(q + h * D + 16 * k + 8 * half + 2 * t);
      x.x *= qscale;
      x.y *= qscale;
      uint32_t rest;  // the lo term's own remainder, not used
      split_bf16(x.x, x.y, &qa.a[k][2 * half], &qa.a[k][2 * half + 1]);
      const float2 hi =
          __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&qa.a[k][2 * half]));
      const float2 mid =
          __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&qa.a[k][2 * half + 1]));
      split_bf16((x.x - hi.x) - mid.x, (x.y - hi.y) - mid.y, &qa.l[k][2 * half], &rest);
      qa.l[k][2 * half + 1] = 0;
    }
  }
}

// Online-softmax attention of KV head kvh's G query heads over keys [b, e) of one sequence (its
// block table `table`), run by the whole CTA of kWarps warps. Warp w walks pages w, w + kWarps, ...
// of the range through its 3-stage ring in smem (smem_bytes<D>(), reused for the final merge, so
// the call starts and ends with a barrier). qa: the queries (load_queries), pre-scaled by
// scale * log2 e. kMasked: head g also skips keys j < lo[g]. Rows outside [b, e) are never used
// (their K/V may be anything, NaN included). Ends with store(g, d, o, lse2) for every (g, d) of
// the group, o normalised (0 without any key), lse2 the base-2 log-sum-exp (-inf without any key).
//
// Per page (16 keys) a warp runs tensor-core mma.m16n8k16: scores S = Q K^T as D/16 x 4 mma (rows:
// the heads' three query terms, columns: keys), the softmax on S's fragments (lane (h, t) holds
// keys 2t, 2t+1, 8+2t, 9+2t of head h), then O += P V as D/8 mma with P split into bf16 (rows h)
// and the bf16 of its remainder (rows h + 8): ~16 bits per probability, whose rounding errors are
// independent across keys, so the output keeps ~fp32 accuracy. K and V come from the ring by
// ldmatrix (V transposed), so the lanes read chunks other lanes copied: __syncwarp orders the ring.
template <int D, int G, bool kMasked, class Store>
__device__ __forceinline__ void attend_keys(uint4* smem, const QFrag<D>& qa, const int32_t* table,
                                            const void* k_cache, const void* v_cache, int Hkv,
                                            int kvh, int b, int e, const int (&lo)[G],
                                            Store&& store) {
  constexpr int kCpr = D / 8;  // 16-byte chunks per row
  constexpr int kPasses = kPage * kCpr / 32;
  constexpr int kPageChunks = kPage * kCpr;
  constexpr int kDt = D / 8;  // 8-dim tiles of the output
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int h = lane / 4, t = lane % 4;
  const bool live = h < G;  // rows h >= G are padding
  const auto* kc = static_cast<const uint4*>(k_cache);
  const auto* vc = static_cast<const uint4*>(v_cache);
  int lo_h = 0;  // this lane's head's lower bound
#pragma unroll
  for (int g = 0; g < G; ++g)
    if (g == h) lo_h = lo[g];

  float m = -INFINITY, l = 0.0f, o[kDt][4];
#pragma unroll
  for (int n = 0; n < kDt; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;

  __syncthreads();  // the ring may still hold the previous call's merge
  const int p_end = e > b ? (e + kPage - 1) / kPage : 0;
  const int first = b / kPage + warp;
  const int nk = first < p_end ? (p_end - first + kWarps - 1) / kWarps : 0;
  uint4* ring = smem + static_cast<size_t>(warp) * kStages * 2 * kPageChunks;
  // The block ids of the warp's pages, 32 at a time: lane j holds page 32i + j's in cur (pages
  // [32i, 32i + 32) of the warp) and the next 32 in nxt, loaded a window ahead, so issuing a page
  // never waits for its table entry.
  auto table_window = [&](int i) {
    const int k = 32 * i + lane;
    return k < nk ? table[first + k * kWarps] : 0;
  };
  int32_t cur = table_window(0), nxt = table_window(1);
  // Swizzled ring positions of this lane's chunks: chunk lane + 32 i lands at off[i % kOff] + 32 i.
  constexpr int kOff = kCpr >= 8 ? kCpr / 4 : 1;
  int off[kOff];
#pragma unroll
  for (int j = 0; j < kOff; ++j)
    off[j] = swizzle<kCpr>((lane + 32 * j) / kCpr, lane % kCpr) - 32 * j;
  auto issue = [&](int k) {  // k increases by one from call to call
    if (k % 32 == 0 && k > 0) {
      cur = nxt;
      nxt = table_window(k / 32 + 1);
    }
    const int64_t blk = __shfl_sync(0xffffffffu, cur, k % 32);
    const int64_t base = (blk * Hkv + kvh) * kPageChunks + lane;  // in 16-byte chunks
    uint4* dst = ring + (k % kStages) * 2 * kPageChunks;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      cp_async16(dst + off[i % kOff] + 32 * i, kc + base + 32 * i);
      cp_async16(dst + kPageChunks + off[i % kOff] + 32 * i, vc + base + 32 * i);
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
  // ldmatrix addresses of this lane inside a page: matrix mi = lane / 8, its row lane % 8.
  const int mi = lane / 8, mr = lane % 8;
  const int k_row = (mi >> 1) * 8 + mr, k_col = mi & 1;  // K: keys 0-7 / 8-15 x dims +0 / +8
  const int v_row = (mi & 1) * 8 + mr, v_col = mi >> 1;  // V^T: keys 0-7 / 8-15 x dims +0 / +8

  // One page: scores, online softmax, P x V. kCheck: the page crosses the range's ends or a head's
  // lower bound, so keys are tested one by one (pages wholly inside skip every test).
  auto page = [&](const uint4* ks, const uint4* vs, int row0, auto check) {
    constexpr bool kCheck = decltype(check)::value;
    float s[2][4] =
        {};  // [key tile][c0..c3]: c0, c1 head h keys 2t, 2t+1 (hi and lo); c2, c3 (mid)
#pragma unroll
    for (int k = 0; k < D / 16; ++k) {
      uint32_t kb[4];
      ldmatrix_x4<false>(kb, ks + swizzle<kCpr>(k_row, 2 * k + k_col));
      mma_bf16(s[0], qa.a[k], kb[0], kb[1]);
      mma_bf16(s[1], qa.a[k], kb[2], kb[3]);
      mma_bf16(s[0], qa.l[k], kb[0], kb[1]);  // the lo terms add to rows 0-7
      mma_bf16(s[1], qa.l[k], kb[2], kb[3]);
    }
    float x[4];  // keys 2t, 2t+1, 8+2t, 9+2t of head h
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      x[i] = s[i / 2][i % 2] + s[i / 2][2 + i % 2];
      if constexpr (kCheck) {
        const int row = row0 + (i / 2) * 8 + 2 * t + (i % 2);
        if (row < b || row >= e || (kMasked && row < lo_h)) x[i] = -INFINITY;
      }
    }
    float pm = fmaxf(fmaxf(x[0], x[1]), fmaxf(x[2], x[3]));
    pm = fmaxf(pm, __shfl_xor_sync(0xffffffffu, pm, 1));
    pm = fmaxf(pm, __shfl_xor_sync(0xffffffffu, pm, 2));
    // The running max moves rarely: rescale only when some head's max grew (exact either way).
    if (__any_sync(0xffffffffu, pm > m)) {
      const float m_new = fmaxf(m, pm);
      const float corr = m == -INFINITY ? 0.0f : exp2f(m - m_new);
      m = m_new;
      l *= corr;
#pragma unroll
      for (int n = 0; n < kDt; ++n)
#pragma unroll
        for (int j = 0; j < 4; ++j) o[n][j] *= corr;
    }
    // every key so far masked: keep the state empty (exp2(-inf - -inf) would be NaN)
    const float m_safe = m == -INFINITY ? 0.0f : m;
    float pv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      pv[i] = live ? exp2f(x[i] - m_safe) : 0.0f;
      l += pv[i];
    }
    uint32_t pa[4];  // A fragment: rows h (bf16) and h + 8 (remainder), keys 2t.. and 8+2t..
    split_bf16(pv[0], pv[1], &pa[0], &pa[1]);
    split_bf16(pv[2], pv[3], &pa[2], &pa[3]);
#pragma unroll
    for (int n = 0; n < kDt; n += 2) {
      uint32_t vb[4];
      ldmatrix_x4<true>(vb, vs + swizzle<kCpr>(v_row, n + v_col));
      mma_bf16(o[n], pa, vb[0], vb[1]);
      mma_bf16(o[n + 1], pa, vb[2], vb[3]);
    }
  };
  for (int k = 0; k < nk; ++k) {
    __syncwarp();  // every lane has read the stage issue() refills
    if (k + kStages - 1 < nk) issue(k + kStages - 1);
    cp_async_commit();
    cp_async_wait<kStages - 1>();
    uint4* ks = ring + (k % kStages) * 2 * kPageChunks;
    const int row0 = (first + k * kWarps) * kPage;
    const bool inside = row0 >= lo_max && row0 + kPage <= e;
    if (!inside) {  // V rows outside the range may hold anything (NaN too), and 0 x NaN is NaN
#pragma unroll
      for (int i = 0; i < kPasses; ++i) {
        const int row = row0 + (lane + 32 * i) / kCpr;
        if (row < b || row >= e) ks[kPageChunks + off[i % kOff] + 32 * i] = make_uint4(0, 0, 0, 0);
      }
    }
    __syncwarp();  // the other lanes' copies have landed
    if (inside)
      page(ks, ks + kPageChunks, row0, std::false_type{});
    else
      page(ks, ks + kPageChunks, row0, std::true_type{});
  }
  cp_async_wait<0>();

  // Sum the 4 lanes of each head, then merge the warps through shared memory.
  l += __shfl_xor_sync(0xffffffffu, l, 1);
  l += __shfl_xor_sync(0xffffffffu, l, 2);
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);
  float* red_m = red;                   // [kWarps][G]
  float* red_l = red_m + kWarps * G;    // [kWarps][G]
  float* red_acc = red_l + kWarps * G;  // [kWarps][G][D]
  if (live) {
    float* acc = red_acc + (warp * G + h) * D + 2 * t;
#pragma unroll
    for (int n = 0; n < kDt; ++n)
      *reinterpret_cast<float2*>(acc + 8 * n) = make_float2(o[n][0] + o[n][2], o[n][1] + o[n][3]);
    if (t == 0) {
      red_m[warp * G + h] = m;
      red_l[warp * G + h] = l;
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
__global__ void __launch_bounds__(kWarps * 32)
    decode_kernel(PagedAttentionCudaParams p, int pages_per_split, int num_splits, float* ws_o,
                  float* ws_lse) {
  static_assert(merge_floats<D, G>() * 4 <= smem_bytes<D>(), "merge area fits the ring");
  extern __shared__ __align__(128)
      uint4 smem[];  // attend_keys' ring: 128-byte lines (mac_partial.cuh)
  const int split = blockIdx.x, kvh = blockIdx.y, seq = blockIdx.z;
  if (p.skip != nullptr && p.skip[seq] == 1)
    return;  // a MAC decode row (whole CTA, before any barrier)
  const int Hq = static_cast<int>(p.num_q_heads), Hkv = static_cast<int>(p.layout.num_kv_heads);
  const int ctx = p.context_lens[seq];
  const int t = p.query_start[seq];
  QFrag<D> qa;
  load_queries<D, G>(p.q + (static_cast<int64_t>(t) * Hq + kvh * G) * D, p.scale * detail::kLog2e,
                     qa);
  const int lo[G] = {};
  const int b = split * pages_per_split * kPage;
  const int e = min(ctx, b + pages_per_split * kPage);
  attend_keys<D, G, false>(
      smem, qa, p.block_tables + static_cast<int64_t>(seq) * p.max_blocks_per_seq, p.k_cache,
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
int launch(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o, float* ws_lse,
           cudaStream_t st) {
  constexpr size_t kSmem = smem_bytes<D>();
  static bool configured = false;
  if (!configured) {
    const cudaError_t e = cudaFuncSetAttribute(
        decode_kernel<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSmem));
    if (e != cudaSuccess) return static_cast<int>(e);
    configured = true;
  }
  dim3 grid(static_cast<unsigned>(plan.num_splits), static_cast<unsigned>(p.layout.num_kv_heads),
            static_cast<unsigned>(p.num_seqs));
  decode_kernel<D, G>
      <<<grid, kWarps * 32, kSmem, st>>>(p, plan.pages_per_split, plan.num_splits, ws_o, ws_lse);
  return static_cast<int>(cudaGetLastError());
}

template <int D>
int dispatch_group(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o,
                   float* ws_lse, cudaStream_t st) {
  return detail::with_group_size(
      p.num_q_heads / p.layout.num_kv_heads, static_cast<int>(cudaErrorInvalidValue),
      [&](auto g) { return launch<D, decltype(g)::value>(p, plan, ws_o, ws_lse, st); });
}

int dispatch_d64(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o,
                 float* ws_lse, cudaStream_t st);
int dispatch_d128(const PagedAttentionCudaParams& p, const DecodePlan& plan, float* ws_o,
                  float* ws_lse, cudaStream_t st);

}  // namespace macserve::kernels::cuda::decode_detail
