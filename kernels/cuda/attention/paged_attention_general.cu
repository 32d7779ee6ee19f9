// General paged causal attention: prefill chunks, mixed prefill + decode batches, any block size,
// head_dim <= 256, any GQA group. One CTA (4 warps) per (token, kv head): the group's queries sit
// in shared memory, K/V tiles of 32 keys are staged through shared memory as f32, and each warp
// keeps an online softmax for the q heads it owns (lane j scores key j of the tile; lanes own dims
// for the output). Exact in f32 apart from the bf16 cache; quadratic in a prefill's length (a
// tensor-core flash prefill is future work).
#include <cfloat>

#include "../cuda_util.cuh"
#include "macserve/kernels/cuda/attention.cuh"

namespace macserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kTile = 32;
constexpr int kMaxHeadsPerWarp = 8;  // group sizes up to 32
constexpr int kMaxDimPerLane = 8;    // head_dim up to 256

__device__ int find_seq(const int32_t* query_start, int num_seqs, int t) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {  // last s with query_start[s] <= t
    const int mid = (lo + hi + 1) / 2;
    if (query_start[mid] <= t)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

__global__ void __launch_bounds__(kWarps * 32) general_kernel(PagedAttentionCudaParams p) {
  extern __shared__ float smem[];
  const PagedKvLayout L = p.layout;
  const int D = static_cast<int>(L.head_dim);
  const int G = static_cast<int>(p.num_q_heads / L.num_kv_heads);
  const int t = blockIdx.x, kvh = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* q_s = smem;                   // [G][D]
  float* k_s = q_s + G * D;            // [kTile][D + 1]
  float* v_s = k_s + kTile * (D + 1);  // [kTile][D]

  const int s = find_seq(p.query_start, static_cast<int>(p.num_seqs), t);
  const int nq = p.query_start[s + 1] - p.query_start[s];
  const int num_keys = p.context_lens[s] - nq + (t - p.query_start[s]) + 1;
  const int32_t* table = p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq;
  for (int i = threadIdx.x; i < G * D; i += blockDim.x)
    q_s[i] = p.q[(static_cast<int64_t>(t) * p.num_q_heads + kvh * G) * D + i] * p.scale;

  float m[kMaxHeadsPerWarp], l[kMaxHeadsPerWarp], acc[kMaxHeadsPerWarp][kMaxDimPerLane];
#pragma unroll
  for (int a = 0; a < kMaxHeadsPerWarp; ++a) {
    m[a] = -FLT_MAX;
    l[a] = 0.0f;
#pragma unroll
    for (int b = 0; b < kMaxDimPerLane; ++b) acc[a][b] = 0.0f;
  }
  const auto* kc = static_cast<const __nv_bfloat16*>(p.k_cache);
  const auto* vc = static_cast<const __nv_bfloat16*>(p.v_cache);
  for (int base = 0; base < num_keys; base += kTile) {
    __syncthreads();  // previous tile consumed (and q_s written on the first pass)
    for (int i = threadIdx.x; i < kTile * D; i += blockDim.x) {
      const int j = i / D, d = i % D, key = base + j;
      float kv = 0.0f, vv = 0.0f;
      if (key < num_keys) {
        const int64_t blk = table[key / L.block_size];
        const int64_t off = blk * L.num_kv_heads * L.block_size * D +
                            int64_t{kvh} * L.block_size * D + (key % L.block_size) * D + d;
        kv = __bfloat162float(kc[off]);
        vv = __bfloat162float(vc[off]);
      }
      k_s[j * (D + 1) + d] = kv;
      v_s[j * D + d] = vv;
    }
    __syncthreads();
    const bool valid = base + lane < num_keys;
#pragma unroll
    for (int a = 0; a < kMaxHeadsPerWarp; ++a) {
      const int g = warp + a * kWarps;
      if (g >= G) break;
      float sc = 0.0f;
      for (int d = 0; d < D; ++d) sc += q_s[g * D + d] * k_s[lane * (D + 1) + d];
      sc = valid ? sc : -FLT_MAX;
      const float m_new = fmaxf(m[a], detail::warp_max(sc));
      const float corr = __expf(m[a] - m_new);
      const float pr = valid ? __expf(sc - m_new) : 0.0f;
      l[a] = l[a] * corr + detail::warp_sum(pr);
      m[a] = m_new;
#pragma unroll
      for (int b = 0; b < kMaxDimPerLane; ++b) acc[a][b] *= corr;
      for (int j = 0; j < kTile && base + j < num_keys; ++j) {
        const float pj = __shfl_sync(0xffffffffu, pr, j);
#pragma unroll
        for (int b = 0; b < kMaxDimPerLane; ++b)
          if (lane + 32 * b < D) acc[a][b] += pj * v_s[j * D + lane + 32 * b];
      }
    }
  }
#pragma unroll
  for (int a = 0; a < kMaxHeadsPerWarp; ++a) {
    const int g = warp + a * kWarps;
    if (g >= G) break;
    const float inv = l[a] > 0.0f ? 1.0f / l[a] : 0.0f;
    const int64_t row = (static_cast<int64_t>(t) * p.num_q_heads + kvh * G + g) * D;
#pragma unroll
    for (int b = 0; b < kMaxDimPerLane; ++b)
      if (lane + 32 * b < D) detail::store(p.out, p.out_bf16, row + lane + 32 * b, acc[a][b] * inv);
  }
}

}  // namespace

int paged_attention_general(const PagedAttentionCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  const int64_t D = p.layout.head_dim, G = p.num_q_heads / p.layout.num_kv_heads;
  if (D > 32 * kMaxDimPerLane || G > kWarps * kMaxHeadsPerWarp)
    return static_cast<int>(cudaErrorInvalidValue);
  const size_t smem = sizeof(float) * (G * D + kTile * (D + 1) + kTile * D);
  static bool configured = false;  // raise the dynamic shared-memory limit once
  if (!configured) {
    cudaFuncSetAttribute(general_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024);
    configured = true;
  }
  dim3 grid(static_cast<unsigned>(p.num_tokens), static_cast<unsigned>(p.layout.num_kv_heads));
  general_kernel<<<grid, kWarps * 32, smem, detail::as_stream(stream)>>>(p);
  return detail::last_error();
}

}  // namespace macserve::kernels::cuda
