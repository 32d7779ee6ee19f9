// MAC-Attention decode, launch 4 of 4: the merge (mac_attention_cuda.h). One CTA of D threads per
// (sequence, q head) folds the head's chunk partials and its row summary into ring row m and the
// output.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "../cuda_util.cuh"
#include "../lse_merge.cuh"
#include "mac_common.cuh"

namespace macserve::kernels::cuda::mac_detail {
namespace {

template <bool kBf16>
__device__ __forceinline__ float ring_get(const void* base, int64_t i) {
  if constexpr (kBf16)
    return bf16_bits_to_float(static_cast<const uint16_t*>(base)[i]);
  else
    return static_cast<const float*>(base)[i];
}

// One pass over a head's chunk slots [t0, t0 + n): the row part [t0, t0 + n_row) folded into
// (o, lse) (which holds the hit summary, or 0 and -inf), the rest (sink, tail) into (o_x, lse_x).
// By the whole CTA of D threads: each class's largest lse first (the threads split the loads), then
// the weights exp(lse_k - max) into shared memory a tile at a time, summed kMergeLanes slots at
// once (lse_merge.cuh; a head with hundreds of chunks, a miss at batch 1, so waits for an eighth of
// the dependent load rounds of one thread per dim). Every thread ends with dim d = t. An empty
// chunk has lse -inf, o 0, weight 0; a class without any key stays (0, -inf).
using detail::Acc8;
using detail::kMergeLanes;
using detail::kMergeTile;
using detail::sum_slots;

__device__ __forceinline__ void fold_chunks(float& o, float& lse, float& o_x, float& lse_x,
                                            const WsLayout& w, int t0, int n_row, int n, int G,
                                            int hl, int D, int d) {
  __shared__ float wts[kMergeTile];
  __shared__ float warp_mx[2][4];
  __shared__ Acc8 sums[2][kMergeLanes][16];  // [row part | rest][lane r][c]: D / 8 <= 16
  __shared__ float wsum[2][kMergeLanes];
  o_x = 0.0f, lse_x = -INFINITY;
  if (n == 0) return;
  float mr = -INFINITY, mx = -INFINITY;
  for (int k = d; k < n; k += D) {
    const float l = w.part_lse[static_cast<int64_t>(t0 + k) * G + hl];
    if (k < n_row)
      mr = fmaxf(mr, l);
    else
      mx = fmaxf(mx, l);
  }
  mr = detail::warp_max(mr), mx = detail::warp_max(mx);
  if (D > 32) {
    if ((d & 31) == 0) warp_mx[0][d >> 5] = mr, warp_mx[1][d >> 5] = mx;
    __syncthreads();
    for (int i = 0; i < D / 32; ++i) mr = fmaxf(mr, warp_mx[0][i]), mx = fmaxf(mx, warp_mx[1][i]);
  }
  mr = fmaxf(mr, lse);
  const bool any_r = mr > -INFINITY, any_x = mx > -INFINITY;
  const int cols = D / 8, c = d % cols, r = d / cols;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float Wr = 0.0f, Wx = 0.0f;
  Acc8 Or{zero, zero}, Ox{zero, zero};
  for (int base = 0; base < n; base += kMergeTile) {
    const int m = min(kMergeTile, n - base);
    __syncthreads();  // the previous tile's weights (or warp_mx) have been read
    for (int k = d; k < m; k += D) {
      const bool row = base + k < n_row;
      const float ref = row ? mr : mx;
      wts[k] = (row ? any_r : any_x)
                   ? expf(w.part_lse[static_cast<int64_t>(t0 + base + k) * G + hl] - ref)
                   : 0.0f;
    }
    __syncthreads();
    const float4* po =
        reinterpret_cast<const float4*>(w.part_o + (static_cast<int64_t>(t0 + base) * G + hl) * D) +
        2 * c;
    const int64_t stride = static_cast<int64_t>(G) * D / 4;  // float4s from one slot to the next
    const int split = min(max(n_row - base, 0), m);  // tile entries [0, split) are row-part chunks
    sum_slots(Or, Wr, po, stride, wts, r, split);
    sum_slots(Ox, Wx, po, stride, wts,
              split + (r - split % kMergeLanes + kMergeLanes) % kMergeLanes, m);
  }
  sums[0][r][c] = Or, sums[1][r][c] = Ox;
  if (c == 0) wsum[0][r] = Wr, wsum[1][r] = Wx;
  __syncthreads();
  const int dc = d / 8, dj = d % 8;  // dim d = 8 dc + dj
  float sr = any_r ? expf(lse - mr) * o : 0.0f, sx = 0.0f;
  Wr = any_r ? expf(lse - mr) : 0.0f, Wx = 0.0f;
  for (int i = 0; i < kMergeLanes; ++i) {
    sr += detail::acc8_dim(sums[0][i][dc], dj);
    sx += detail::acc8_dim(sums[1][i][dc], dj);
    Wr += wsum[0][i], Wx += wsum[1][i];
  }
  if (any_r) o = sr / Wr, lse = mr + logf(Wr);
  if (any_x) o_x = sx / Wx, lse_x = mx + logf(Wx);
}

template <bool kBf16>
__global__ void merge_kernel(MacCudaParams p, WsLayout w) {
  const int h = blockIdx.x, s = blockIdx.y, d = threadIdx.x;
  if (!decodes(p, s)) return;
  const int ctx = p.context_lens[s];
  const int Hq = static_cast<int>(p.num_q_heads), Hkv = static_cast<int>(p.layout.num_kv_heads),
            G = Hq / Hkv;
  const int D = static_cast<int>(p.layout.head_dim), M = static_cast<int>(p.cfg.window);
  const int m = ctx - 1, g = h / G, hl = h % G;
  const MacHeadDecision dec = p.decisions[static_cast<int64_t>(s) * Hq + h];
  const int slot = p.ring_slots[s];
  const GroupInfo gi = w.groups[static_cast<int64_t>(s) * Hkv + g];
  float o = 0.0f, lse = -INFINITY;
  if (dec.hit) {
    const int64_t row = (static_cast<int64_t>(slot) * M + dec.matched % M) * Hq + h;
    o = ring_get<kBf16>(p.ring.o, row * D + d);
    lse = p.ring.lse[row];
  }
  float o_x, lse_x;
  fold_chunks(o, lse, o_x, lse_x, w, gi.task_begin, gi.n_row, gi.n_row + gi.n_sink + gi.n_tail, G,
              hl, D, d);
  const int64_t qi = (token_of(p, s) * Hq + h) * D + d;
  if (slot >= 0) {
    __syncthreads();  // row p may share row m's ring slot (p = m - M): every read precedes the
                      // write
    const int64_t row = (static_cast<int64_t>(slot) * M + m % M) * Hq + h;
    const bool empty = !(lse > -INFINITY);
    ring_store(p.ring.q, kBf16, row * D + d, p.q_pre[qi]);
    ring_store(p.ring.o, kBf16, row * D + d, empty ? 0.0f : o);
    if (d == 0) p.ring.lse[row] = empty ? -INFINITY : lse;
  }
  // output = row (+) sink and tail
  const float mm = fmaxf(lse, lse_x);
  if (mm > -INFINITY) {
    const float a = expf(lse - mm), b = expf(lse_x - mm);
    o = (a * o + b * o_x) / (a + b);
  }
  detail::store(p.out, p.out_bf16, qi, o);
}

}  // namespace

int launch_merge(const MacCudaParams& p, const WsLayout& w, cudaStream_t st) {
  const dim3 grid(static_cast<unsigned>(p.num_q_heads), static_cast<unsigned>(p.num_seqs));
  const unsigned threads = static_cast<unsigned>(p.layout.head_dim);
  if (p.cfg.ring_bf16)
    merge_kernel<true><<<grid, threads, 0, st>>>(p, w);
  else
    merge_kernel<false><<<grid, threads, 0, st>>>(p, w);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda::mac_detail
