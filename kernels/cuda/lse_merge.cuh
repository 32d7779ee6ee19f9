// Weighted sums of partial attention outputs, shared by the split-KV decode's combine kernel and
// MAC's merge (not a public header). A CTA of D threads folds n slots, each a D-float partial
// output at a fixed stride with a weight in shared memory. A thread with dims [8c, 8c + 8) (c = t %
// (D / 8), two 16-byte loads per slot) takes every kMergeLanes-th slot from lane r = t / (D / 8),
// and loads kMergeBatch slots before it sums them: ptxas keeps only about two loads of a thread in
// flight however a plain loop is unrolled, so one thread per dim would wait for n dependent load
// rounds where this waits for n / kMergeLanes. The lanes' sums then meet in shared memory in lane
// order. Slot order within a lane and lane order are fixed, so the result depends only on n and the
// data.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace macserve::kernels::cuda::detail {

constexpr int kMergeTile = 256;  // slots whose weights sit in shared memory at once
constexpr int kMergeLanes = 8;   // slots summed at once: D threads = kMergeLanes x (D / 8) lanes
constexpr int kMergeBatch = 4;   // slots a thread loads before it sums them

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
// weigh 0 and load nothing). po points at the thread's 8 dims of slot 0; stride is in float4s.
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

// Dim 8 dc + dj of a lane's sum, as stored in a [kMergeLanes][D / 8] array of Acc8.
__device__ __forceinline__ float acc8_dim(const Acc8& a, int dj) {
  return reinterpret_cast<const float*>(&a)[dj];
}

}  // namespace macserve::kernels::cuda::detail
