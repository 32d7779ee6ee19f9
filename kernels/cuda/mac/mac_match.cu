// MAC-Attention decode, launch 1 of 4: the match (mac_attention_cuda.h). Each head's nearest valid
// ring row by squared L2 of q_pre over its window, a share of the window per CTA.
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "../cuda_util.cuh"
#include "mac_common.cuh"

namespace macserve::kernels::cuda::mac_detail {
namespace {

constexpr int kMatchThreads =
    256;  // 32 candidate groups of 8 lanes (16 B each), 4 candidates each per pass

// kN (8 or 4) consecutive elements of a ring row as floats (16- or 8-byte loads).
template <bool kBf16, int kN>
__device__ __forceinline__ void load_n(const void* base, int64_t elem, float* out) {
  static_assert(kN == 8 || kN == 4, "8 or 4 elements");
  if constexpr (kBf16 && kN == 8) {
    const uint4 v = *reinterpret_cast<const uint4*>(static_cast<const uint16_t*>(base) + elem);
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      out[2 * i] = bf16_bits_to_float(w[i] & 0xffffu);
      out[2 * i + 1] = bf16_bits_to_float(w[i] >> 16);
    }
  } else if constexpr (kBf16) {
    const uint2 v = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(base) + elem);
    out[0] = bf16_bits_to_float(v.x & 0xffffu), out[1] = bf16_bits_to_float(v.x >> 16);
    out[2] = bf16_bits_to_float(v.y & 0xffffu), out[3] = bf16_bits_to_float(v.y >> 16);
  } else {
#pragma unroll
    for (int i = 0; i < kN; i += 4) {
      const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(base) + elem + i);
      out[i] = a.x, out[i + 1] = a.y, out[i + 2] = a.z, out[i + 3] = a.w;
    }
  }
}

// (d, pos) ordering: smaller distance, then the older position.
__device__ __forceinline__ bool better(float d, int pos, float bd, int bpos) {
  return d < bd || (d == bd && pos < bpos);
}

// One CTA per (share of the window, q head, sequence): the share's nearest valid ring row, written
// as (distance bits << 32) | position to match_best; the schedule kernel takes the smallest.
template <bool kBf16, int D>
__global__ void __launch_bounds__(kMatchThreads) match_kernel(MacCudaParams p, WsLayout w) {
  const int split = blockIdx.x, h = blockIdx.y, s = blockIdx.z, tid = threadIdx.x;
  if (!decodes(p, s)) return;  // inactive (padded) row, or an exact sequence of a mixed step
  const MatchWindow win = match_window(p, s);
  if (!win.eligible) return;  // the schedule kernel reads nothing of this head
  const int Hq = static_cast<int>(p.num_q_heads);
  const int M = static_cast<int>(p.cfg.window);
  const int m = win.m, begin = win.begin;
  const float thr = hit_threshold(p, D);
  const int share = (m - begin + gridDim.x - 1) / gridDim.x;
  const int lo = begin + split * share, hi = min(m, lo + share);

  float best_d = INFINITY;
  int best_pos = INT_MAX;
  constexpr int kElems = D >= 64 ? 8 : D / 8;  // per lane and chunk (8 lanes per candidate)
  constexpr int kChunkDims = 8 * kElems;       // 64 (32 when D is 32)
  constexpr int kChunks = D / kChunkDims;
  constexpr int kGroups = kMatchThreads / 8;
  const int lane8 = tid & 7, cand = tid >> 3;  // candidate groups of 8 lanes
  float q[kChunks][kElems];
  const float* qp = p.q_pre + (token_of(p, s) * Hq + h) * D;
#pragma unroll
  for (int c = 0; c < kChunks; ++c)
#pragma unroll
    for (int e = 0; e < kElems; e += 4) {
      const float4 a = *reinterpret_cast<const float4*>(qp + c * kChunkDims + lane8 * kElems + e);
      q[c][e] = a.x, q[c][e + 1] = a.y, q[c][e + 2] = a.z, q[c][e + 3] = a.w;
    }
  const int64_t slot_row0 = static_cast<int64_t>(win.slot) * M;
  // kU candidates per lane group and pass, their loads issued together (a pass is latency
  // bound). Each candidate's sum is taken in the same order as one at a time, so decisions do
  // not depend on kU or on the split.
  constexpr int kU = 4;
  for (int base = lo; base < hi;
       base += kGroups * kU) {  // uniform trip count: shuffles see full warps
    int xs[kU];
    int64_t row[kU];
    bool valid[kU];
    float acc[kU];
#pragma unroll
    for (int j = 0; j < kU; ++j) {
      xs[j] = base + cand + kGroups * j;
      row[j] = (slot_row0 + (xs[j] < hi ? xs[j] : begin) % M) * Hq + h;
      acc[j] = 0.0f;
    }
#pragma unroll
    for (int j = 0; j < kU; ++j)
      valid[j] = xs[j] < hi && p.ring.lse[row[j]] > -INFINITY;  // invalid rows never win
#pragma unroll
    for (int c = 0; c < kChunks; ++c) {
      float v[kU][kElems];
#pragma unroll
      for (int j = 0; j < kU; ++j)
        if (c == 0 ? xs[j] < hi
                   : valid[j])  // the first chunk beside the lse load; later ones if still needed
          load_n<kBf16, kElems>(p.ring.q, row[j] * D + c * kChunkDims + lane8 * kElems, v[j]);
#pragma unroll
      for (int j = 0; j < kU; ++j) {
        if (valid[j]) {
#pragma unroll
          for (int i = 0; i < kElems; ++i) {
            const float df = q[c][i] - v[j][i];
            acc[j] = fmaf(df, df, acc[j]);
          }
        }
        // reduce the partial sum over the candidate's 8 lanes (aligned groups of 8)
        float t = acc[j];
        t += __shfl_xor_sync(0xffffffffu, t, 1);
        t += __shfl_xor_sync(0xffffffffu, t, 2);
        t += __shfl_xor_sync(0xffffffffu, t, 4);
        if (c + 1 < kChunks) {
          // early exit: the partial sum is a lower bound; at or above the threshold it cannot
          // hit (and a candidate that cannot hit never decides the outcome)
          if (valid[j] && t >= thr) {
            if (better(t, xs[j], best_d, best_pos)) best_d = t, best_pos = xs[j];
            valid[j] = false;
          }
        } else if (valid[j]) {
          if (better(t, xs[j], best_d, best_pos)) best_d = t, best_pos = xs[j];
        }
      }
    }
  }
  // argmin over the block
#pragma unroll
  for (int o = 8; o < 32; o <<= 1) {
    const float od = __shfl_xor_sync(0xffffffffu, best_d, o);
    const int op = __shfl_xor_sync(0xffffffffu, best_pos, o);
    if (better(od, op, best_d, best_pos)) best_d = od, best_pos = op;
  }
  __shared__ float sd[kMatchThreads / 32];
  __shared__ int sp[kMatchThreads / 32];
  if ((tid & 31) == 0) sd[tid >> 5] = best_d, sp[tid >> 5] = best_pos;
  __syncthreads();
  if (tid == 0)
    for (int i = 1; i < kMatchThreads / 32; ++i)
      if (better(sd[i], sp[i], best_d, best_pos)) best_d = sd[i], best_pos = sp[i];
  if (tid != 0) return;
  // distances are >= 0 (or +inf), so their bits order as the floats do; NaN never won above
  w.match_best[(static_cast<int64_t>(s) * Hq + h) * kMaxMatchSplits + split] =
      best_pos == INT_MAX ? ~0ull
                          : (static_cast<unsigned long long>(__float_as_uint(best_d)) << 32) |
                                static_cast<uint32_t>(best_pos);
}

}  // namespace

int32_t match_splits_for(const MacCudaParams& p) {
  // At small batch each head's window is split over several CTAs (shares of at least one pass of
  // 128 candidates) so the latency-bound scan has about two CTAs per SM.
  const int sms = detail::device_sms();
  const int64_t heads = std::max<int64_t>(1, p.num_q_heads * p.num_seqs);
  const int64_t by_rows = (p.cfg.window + kMatchThreads / 2 - 1) / (kMatchThreads / 2);
  return static_cast<int32_t>(std::clamp<int64_t>(
      std::min<int64_t>((2 * sms + heads - 1) / heads, by_rows), 1, kMaxMatchSplits));
}

int launch_match(const MacCudaParams& p, const WsLayout& w, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>(w.match_splits), static_cast<unsigned>(p.num_q_heads),
                  static_cast<unsigned>(p.num_seqs));
  return with_head_dim(p.layout.head_dim, static_cast<int>(cudaErrorInvalidValue), [&](auto d) {
    constexpr int D = decltype(d)::value;
    if (p.cfg.ring_bf16)
      match_kernel<true, D><<<grid, kMatchThreads, 0, st>>>(p, w);
    else
      match_kernel<false, D><<<grid, kMatchThreads, 0, st>>>(p, w);
    return detail::last_error();
  });
}

}  // namespace macserve::kernels::cuda::mac_detail
