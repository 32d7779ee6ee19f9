// The CUDA-core flash prefill kernel that paged_prefill_flash replaced (as of 27e6b1c), kept in
// the benchmark only, to measure the two side by side.
// Flash-style paged causal attention for prefill chunks and mixed steps: one CTA (4 warps) per
// (tile of up to 64 / G query tokens of one sequence, kv head), i.e. 64 (query, q head) rows that
// share every K/V tile. Queries stay in shared memory; K/V tiles of 32 keys are read once per CTA
// (16-byte loads from the bf16 paged cache, converted to f32 in shared memory); each warp owns 16
// rows with an online softmax (lane j scores key j of the tile against all 16 rows), the
// probabilities go through shared memory to the P x V product (lanes own output dims). Causal per
// row over the sequence's prior context (chunked prefill: the chunk's queries are the last
// query_len positions of context_len keys). CUDA cores, f32 arithmetic; tensor cores are future
// work.
#include <cfloat>

#include "../../kernels/cuda/cuda_util.cuh"
#include "macserve/kernels/cuda/attention.cuh"

namespace macserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kRowsPerWarp = 16;
constexpr int kRows = kWarps * kRowsPerWarp;  // (query, head) rows per CTA
constexpr int kTile = 32;                     // keys per tile

template <int D>
constexpr size_t flash_smem_bytes() {
  return sizeof(float) * (kRows * D + kTile * (D + 1) + kTile * D + kRows * kTile);
}

template <int D>
__global__ void __launch_bounds__(kWarps * 32)
    flash_prefill_kernel(PagedAttentionCudaParams p, int mq) {
  constexpr int NB = D / 32;  // output dims per lane
  extern __shared__ float smem[];
  float* q_s = smem;                   // [kRows][D], pre-scaled
  float* k_s = q_s + kRows * D;        // [kTile][D + 1]
  float* v_s = k_s + kTile * (D + 1);  // [kTile][D]
  float* p_s = v_s + kTile * D;        // [kRows][kTile]
  const PagedKvLayout L = p.layout;
  const int G = static_cast<int>(p.num_q_heads / L.num_kv_heads);
  const int kvh = blockIdx.y;
  // Which sequence and tile: tiles are numbered sequence after sequence.
  int tile = blockIdx.x, s = 0;
  for (; s < p.num_seqs; ++s) {
    const int nq = p.query_start[s + 1] - p.query_start[s];
    const int nt = (nq + mq - 1) / mq;
    if (tile < nt) break;
    tile -= nt;
  }
  if (s >= p.num_seqs || (p.skip != nullptr && p.skip[s] == 1)) return;
  const int q0 = p.query_start[s], nq = p.query_start[s + 1] - q0;
  const int t_begin = tile * mq, t_end = min(nq, t_begin + mq);
  const int rows = (t_end - t_begin) * G;
  const int ctx = p.context_lens[s];
  const int max_keys = ctx - nq + t_end;  // keys the tile's last query sees
  const int32_t* table = p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;

  for (int i = threadIdx.x; i < kRows * D; i += blockDim.x) {
    const int r = i / D, d = i % D;
    float v = 0.0f;
    if (r < rows)
      v = p.q[(static_cast<int64_t>(q0 + t_begin + r / G) * p.num_q_heads + kvh * G + r % G) * D +
              d] *
          p.scale;
    q_s[i] = v;
  }
  float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][NB];
  int nk[kRowsPerWarp];
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int row = warp * kRowsPerWarp + rr;
    nk[rr] = row < rows ? ctx - nq + t_begin + row / G + 1 : 0;
    m[rr] = -FLT_MAX;
    l[rr] = 0.0f;
#pragma unroll
    for (int b = 0; b < NB; ++b) acc[rr][b] = 0.0f;
  }
  const auto* kc = static_cast<const __nv_bfloat16*>(p.k_cache);
  const auto* vc = static_cast<const __nv_bfloat16*>(p.v_cache);
  const int64_t head_off = static_cast<int64_t>(kvh) * L.block_size * D;
  const float* qw = q_s + warp * kRowsPerWarp * D;
  float* pw = p_s + warp * kRowsPerWarp * kTile;

  for (int base = 0; base < max_keys; base += kTile) {
    __syncthreads();  // the previous tile is consumed (and q_s written before the first)
    for (int i = threadIdx.x; i < kTile * D / 8; i += blockDim.x) {
      const int j = (i * 8) / D, d = (i * 8) % D, key = base + j;
      float kf[8], vf[8];
      if (key < max_keys) {
        const int64_t off =
            static_cast<int64_t>(table[key / L.block_size]) * L.num_kv_heads * L.block_size * D +
            head_off + static_cast<int64_t>(key % L.block_size) * D + d;
        const uint4 kr = *reinterpret_cast<const uint4*>(kc + off);
        const uint4 vr = *reinterpret_cast<const uint4*>(vc + off);
        const auto* kb = reinterpret_cast<const __nv_bfloat16*>(&kr);
        const auto* vb = reinterpret_cast<const __nv_bfloat16*>(&vr);
#pragma unroll
        for (int e = 0; e < 8; ++e)
          kf[e] = __bfloat162float(kb[e]), vf[e] = __bfloat162float(vb[e]);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) kf[e] = 0.0f, vf[e] = 0.0f;
      }
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        k_s[j * (D + 1) + d + e] = kf[e];
        v_s[j * D + d + e] = vf[e];
      }
    }
    __syncthreads();
    // Scores: lane = key of the tile, 16 rows at once (q_s reads are warp broadcasts).
    float sc[kRowsPerWarp];
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) sc[rr] = 0.0f;
    const float* krow = k_s + lane * (D + 1);
#pragma unroll 4
    for (int d = 0; d < D; ++d) {
      const float kd = krow[d];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) sc[rr] += qw[rr * D + d] * kd;
    }
    const int key = base + lane;
#pragma unroll
    for (int rr = 0; rr < kRowsPerWarp; ++rr) {
      const bool valid = key < nk[rr];
      const float x = valid ? sc[rr] : -FLT_MAX;
      const float m_new = fmaxf(m[rr], detail::warp_max(x));
      const float corr = __expf(m[rr] - m_new);
      const float pr = valid ? __expf(x - m_new) : 0.0f;
      l[rr] = l[rr] * corr + detail::warp_sum(pr);
      m[rr] = m_new;
#pragma unroll
      for (int b = 0; b < NB; ++b) acc[rr][b] *= corr;
      pw[rr * kTile + lane] = pr;
    }
    __syncwarp();
    const int jmax = min(kTile, max_keys - base);
    for (int j = 0; j < jmax; ++j) {
      float vv[NB];
#pragma unroll
      for (int b = 0; b < NB; ++b) vv[b] = v_s[j * D + lane + 32 * b];
#pragma unroll
      for (int rr = 0; rr < kRowsPerWarp; ++rr) {
        const float pj = pw[rr * kTile + j];
#pragma unroll
        for (int b = 0; b < NB; ++b) acc[rr][b] += pj * vv[b];
      }
    }
    __syncwarp();
  }
#pragma unroll
  for (int rr = 0; rr < kRowsPerWarp; ++rr) {
    const int row = warp * kRowsPerWarp + rr;
    if (row >= rows) break;
    const float inv = l[rr] > 0.0f ? 1.0f / l[rr] : 0.0f;
    const int64_t o =
        (static_cast<int64_t>(q0 + t_begin + row / G) * p.num_q_heads + kvh * G + row % G) * D;
#pragma unroll
    for (int b = 0; b < NB; ++b)
      detail::store(p.out, p.out_bf16, o + lane + 32 * b, acc[rr][b] * inv);
  }
}

template <int D>
int launch_flash(const PagedAttentionCudaParams& p, cudaStream_t st) {
  const int G = static_cast<int>(p.num_q_heads / p.layout.num_kv_heads);
  const int mq = kRows / G;
  static bool configured = false;  // raise the dynamic shared-memory limit once
  if (!configured) {
    cudaFuncSetAttribute(flash_prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(flash_smem_bytes<D>()));
    configured = true;
  }
  // Upper bound of the tiles: every sequence may end with a partial one.
  const int64_t tiles = (p.num_tokens + mq - 1) / mq + p.num_seqs;
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.layout.num_kv_heads));
  flash_prefill_kernel<D><<<grid, kWarps * 32, flash_smem_bytes<D>(), st>>>(p, mq);
  return detail::last_error();
}

}  // namespace

int paged_prefill_flash_simt(const PagedAttentionCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  const int64_t G = p.num_q_heads / p.layout.num_kv_heads;
  if (G < 1 || G > 8) return static_cast<int>(cudaErrorInvalidValue);
  const auto st = detail::as_stream(stream);
  return p.layout.head_dim == 64 ? launch_flash<64>(p, st) : launch_flash<128>(p, st);
}

}  // namespace macserve::kernels::cuda
