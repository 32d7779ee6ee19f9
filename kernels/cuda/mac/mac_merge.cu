// MAC-Attention decode, launch 4 of 4: the merge (mac_attention_cuda.h). One CTA of D threads per
// (sequence, q head) folds the head's chunk partials and its row summary into ring row m and the
// output.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "../cuda_util.cuh"
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
// the weights exp(lse_k - max) into shared memory a tile at a time. The weighted sums run
// kMergeLanes slots at once: thread t takes dims [8c, 8c + 8) (c = t % (D / 8), two 16-byte loads
// per slot) of every kMergeLanes-th slot from r = t / (D / 8). A head with hundreds of chunks (a
// miss at batch 1) so waits for an eighth of the dependent load rounds of one thread per dim (ptxas
// keeps only about two loads of a thread in flight, however the loop is unrolled). The lanes' sums
// then meet in shared memory, in lane order, and every thread ends with dim d = t. An empty chunk
// has lse -inf, o 0, weight 0; a class without any key stays (0, -inf).
constexpr int kMergeTile = 256;
constexpr int kMergeLanes =
    8;  // slots summed at once: D threads = kMergeLanes x (D / 8) lanes of 8 dims
constexpr int kMergeBatch = 4;  // slots a thread loads before it sums them

struct Acc8 {
  float4 a, b;  // dims [8c, 8c + 4), [8c + 4, 8c + 8)
};
__device__ __forceinline__ void fma8(Acc8& acc, float wt, const float4 x, const float4 y) {
  acc.a.x = fmaf(wt, x.x, acc.a.x), acc.a.y = fmaf(wt, x.y, acc.a.y),
  acc.a.z = fmaf(wt, x.z, acc.a.z);
  acc.a.w = fmaf(wt, x.w, acc.a.w), acc.b.x = fmaf(wt, y.x, acc.b.x),
  acc.b.y = fmaf(wt, y.y, acc.b.y);
  acc.b.z = fmaf(wt, y.z, acc.b.z), acc.b.w = fmaf(wt, y.w, acc.b.w);
}

// acc += wts[k] * po[k], W += wts[k] over k = k0, k0 + kMergeLanes, ... < end, kMergeBatch slots
// loaded before they are summed; the last, partial batch is guarded (its out-of-range entries
// weigh 0 and load nothing).
template <bool kGuarded>
__device__ __forceinline__ void sum_batch(Acc8& acc, float& W, const float4* po, int64_t stride,
                                          const float* wts, int k0, int end) {
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 x[kMergeBatch], y[kMergeBatch];
  float wt[kMergeBatch];
#pragma unroll
  for (int u = 0; u < kMergeBatch; ++u) {
    const int k = k0 + u * kMergeLanes;
    const bool in = !kGuarded || k < end;
    x[u] = in ? __ldg(po + k * stride) : zero;
    y[u] = in ? __ldg(po + k * stride + 1) : zero;
    wt[u] = in ? wts[k] : 0.0f;
  }
#pragma unroll
  for (int u = 0; u < kMergeBatch; ++u) W += wt[u], fma8(acc, wt[u], x[u], y[u]);
}
__device__ __forceinline__ void sum_slots(Acc8& acc, float& W, const float4* po, int64_t stride,
                                          const float* wts, int k0, int end) {
  for (; k0 + (kMergeBatch - 1) * kMergeLanes < end; k0 += kMergeBatch * kMergeLanes)
    sum_batch<false>(acc, W, po, stride, wts, k0, end);
  if (k0 < end) sum_batch<true>(acc, W, po, stride, wts, k0, end);
}

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
    sr += reinterpret_cast<const float*>(&sums[0][i][dc])[dj];
    sx += reinterpret_cast<const float*>(&sums[1][i][dc])[dj];
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
