// Flash attention on the tensor cores for prefill chunks and mixed steps over the paged bf16 cache.
//
// CTA = 4 warps = one (tile of 128 (query, q head) rows of one sequence, kv head). The rows of a
// tile are the G query heads of 128 / G consecutive queries (GQA packing: every K/V tile read
// serves all G heads). The queries (f32, times scale * log2 e) are rounded to bf16 into shared
// memory once. Each warp owns 32 rows as two m16 row tiles, so every K/V fragment it loads feeds
// two mma. Keys go in tiles of 32 (head_dim 128) or 64 (head_dim 64): K and V rows are gathered
// through the block table (block size a power of two) with 16-byte cp.async into a 3-stage
// shared-memory ring (swizzled for ldmatrix, zero-filled past the last key); S = Q K^T and O += P V
// run as mma.sync m16n8k16 (bf16 in, fp32 accumulate); the online softmax (base 2) works on the
// score fragments in registers (a row's max over the 4 lanes of its quad), and P is rounded to bf16
// as the A operand of P V straight from the score registers.
//
// Causal per row over the sequence's prior context (chunked prefill: the chunk's queries are the
// last query_len positions of context_len keys). Key tiles start at key 0 for every row and a
// row's masked keys add exact zeros, so a row's result depends on its own query and keys only: the
// same bits whatever the chunking, the batch or the row's place in its tile.
#include <cmath>

#include "../cuda_util.cuh"
#include "../mma.cuh"
#include "macserve/kernels/cuda/attention.cuh"

namespace macserve::kernels::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kWarpRows = 32;              // two m16 row tiles per warp share every K/V fragment
constexpr int kRows = kWarps * kWarpRows;  // (query, q head) rows per CTA
// Keys per tile: 32 at head_dim 128 keeps the scores, the output and the fragments of two row
// tiles within 255 registers (64 spills).
template <int D>
constexpr int kKeys = D == 128 ? 32 : 64;
constexpr int kStages = 3;  // K/V tiles in flight
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
constexpr size_t flash_smem_bytes() {
  return (size_t{kRows} * D + size_t{kStages} * 2 * kKeys<D> * D) * sizeof(__nv_bfloat16);
}

__device__ __forceinline__ float fast_exp2(float x) {  // exp2(-inf) = 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Which sequence and tile a CTA computes: tiles are numbered sequence after sequence, and the
// grid runs them last to first (a sequence's last tiles see the most keys: the longest CTAs start
// first). False when the CTA has no tile (the grid is an upper bound) or its sequence is skipped.
struct TileRef {
  int seq, tile;
};
__device__ bool find_tile(const PagedAttentionCudaParams& p, int mq, TileRef* ref) {
  int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x), s = 0;
  for (; s < p.num_seqs; ++s) {
    const int nt = (p.query_start[s + 1] - p.query_start[s] + mq - 1) / mq;
    if (tile < nt) break;
    tile -= nt;
  }
  if (s >= p.num_seqs || (p.skip != nullptr && p.skip[s] == 1)) return false;
  *ref = {s, tile};
  return true;
}

template <int D>
__global__ void __launch_bounds__(kWarps * 32, 2)
    flash_prefill_kernel(PagedAttentionCudaParams p, int mq, int block_shift) {
  constexpr int kKt = kKeys<D>;
  constexpr int kCpr = D / 8;   // 16-byte chunks per Q/K/V row
  constexpr int kKs = D / 16;   // k steps of Q K^T
  constexpr int kSt = kKt / 8;  // score n-tiles per key tile
  constexpr int kOt = D / 8;    // output n-tiles
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto* q_s = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kRows][D], swizzled
  __nv_bfloat16* kv_s = q_s + kRows * D;                   // per stage: K then V, [kKt][D]

  TileRef ref{};
  if (!find_tile(p, mq, &ref)) return;
  const PagedKvLayout L = p.layout;
  const int G = static_cast<int>(p.num_q_heads / L.num_kv_heads);
  const int kvh = static_cast<int>(blockIdx.y), s = ref.seq;
  const int q0 = p.query_start[s], nq = p.query_start[s + 1] - q0;
  const int t_begin = ref.tile * mq, t_end = min(nq, t_begin + mq);
  const int rows = (t_end - t_begin) * G;
  const int ctx = p.context_lens[s];
  const int first_keys = ctx - nq + t_begin + 1;  // keys the tile's first query sees
  const int max_keys = ctx - nq + t_end;          // keys its last query sees
  const int32_t* table = p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const auto row_offset = [&](int row) {  // element offset of a tile row in q and out
    return (static_cast<int64_t>(q0 + t_begin + row / G) * p.num_q_heads + kvh * G + row % G) * D;
  };

  // The tile's queries times scale * log2 e, rounded to bf16, into shared memory (zero rows past
  // `rows`).
  const float qscale = p.scale * kLog2e;
  for (int i = static_cast<int>(threadIdx.x); i < kRows * kCpr; i += kWarps * 32) {
    const int r = i / kCpr, c = i % kCpr;
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (r < rows) {
      const float* src = p.q + row_offset(r) + c * 8;
      const float4 a = *reinterpret_cast<const float4*>(src);
      const float4 b = *reinterpret_cast<const float4*>(src + 4);
      packed = make_uint4(detail::pack_bf16(a.x * qscale, a.y * qscale),
                          detail::pack_bf16(a.z * qscale, a.w * qscale),
                          detail::pack_bf16(b.x * qscale, b.y * qscale),
                          detail::pack_bf16(b.z * qscale, b.w * qscale));
    }
    *reinterpret_cast<uint4*>(q_s + detail::swizzle<kCpr>(r, c) * 8) = packed;
  }
  // This lane's four rows: g + 8h of row tile mt of the warp. Padding rows (past `rows`) see key
  // 0 only, so every row has a finite maximum from the first tile on.
  int nk[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = warp * kWarpRows + 16 * mt + g + 8 * h;
      nk[mt][h] = row < rows ? first_keys + row / G : 1;
    }
  const bool warp_active = warp * kWarpRows < rows;

  const auto* kc = static_cast<const __nv_bfloat16*>(p.k_cache);
  const auto* vc = static_cast<const __nv_bfloat16*>(p.v_cache);
  const int64_t head_off = static_cast<int64_t>(kvh) * L.block_size * D;
  const int64_t block_stride = L.num_kv_heads * L.block_size * D;
  const int in_block = (1 << block_shift) - 1;
  // Tile `it` into ring stage it % kStages: K then V, [kKt][D] each, chunks swizzled, zeros past
  // the last key.
  auto load_tile = [&](int it) {
    __nv_bfloat16* ks = kv_s + (it % kStages) * 2 * kKt * D;
    __nv_bfloat16* vs = ks + kKt * D;
#pragma unroll
    for (int i = static_cast<int>(threadIdx.x); i < kKt * kCpr; i += kWarps * 32) {
      const int r = i / kCpr, c = i % kCpr, key = it * kKt + r;
      const bool in = key < max_keys;
      int64_t off = 0;
      if (in)
        off = static_cast<int64_t>(table[key >> block_shift]) * block_stride + head_off +
              static_cast<int64_t>(key & in_block) * D + c * 8;
      const int at = detail::swizzle<kCpr>(r, c) * 8;
      detail::cp_async16_or_zero(ks + at, kc + off, in);
      detail::cp_async16_or_zero(vs + at, vc + off, in);
    }
  };

  float o[2][kOt][4];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int j = 0; j < kOt; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
  float m[2][2], l[2][2];
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
  const int ntiles = (max_keys + kKt - 1) / kKt;
#pragma unroll
  for (int it = 0; it < kStages - 1; ++it) {
    if (it < ntiles) load_tile(it);
    detail::cp_async_commit();
  }
  const int mi = lane / 8, mr = lane % 8;  // ldmatrix: this lane addresses row mr of matrix mi
  for (int it = 0; it < ntiles; ++it) {
    if (it + kStages - 1 < ntiles) load_tile(it + kStages - 1);
    detail::cp_async_commit();
    detail::cp_async_wait<kStages - 1>();
    __syncthreads();  // tile `it` (and, the first time, q_s) is there for every thread
    if (warp_active) {
      const __nv_bfloat16* ks = kv_s + (it % kStages) * 2 * kKt * D;
      const __nv_bfloat16* vs = ks + kKt * D;
      // S = Q K^T: per k step, A fragments of both row tiles, then B fragments of n-tiles j, j + 1
      // (keys 8j..8j+15) from one ldmatrix.x4, each used by both row tiles.
      float sc[2][kSt][4];
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int j = 0; j < kSt; ++j)
          sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < kKs; ++kk) {
        uint32_t a[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
          detail::ldmatrix_x4<false>(
              a[mt], q_s + detail::swizzle<kCpr>(warp * kWarpRows + 16 * mt + 8 * (mi % 2) + mr,
                                                 2 * kk + mi / 2) *
                               8);
#pragma unroll
        for (int j = 0; j < kSt; j += 2) {
          uint32_t b[4];
          detail::ldmatrix_x4<false>(
              b, ks + detail::swizzle<kCpr>(8 * (j + mi / 2) + mr, 2 * kk + mi % 2) * 8);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            detail::mma_bf16(sc[mt][j], a[mt], b[0], b[1]);
            detail::mma_bf16(sc[mt][j + 1], a[mt], b[2], b[3]);
          }
        }
      }
      // Causal mask, only on tiles that reach past the first row's last key.
      const int base = it * kKt;
      if (base + kKt > first_keys) {
#pragma unroll
        for (int mt = 0; mt < 2; ++mt)
#pragma unroll
          for (int j = 0; j < kSt; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e)
              if (base + 8 * j + 2 * t + e % 2 >= nk[mt][e / 2]) sc[mt][j][e] = -INFINITY;
      }
      // Online softmax per row (registers e = 2h, 2h + 1 of every n-tile hold row g + 8h).
#pragma unroll
      for (int mt = 0; mt < 2; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float mx = m[mt][h];
#pragma unroll
          for (int j = 0; j < kSt; ++j)
            mx = fmaxf(mx, fmaxf(sc[mt][j][2 * h], sc[mt][j][2 * h + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float corr = fast_exp2(m[mt][h] - mx);
          m[mt][h] = mx;
          float sum = 0.0f;
#pragma unroll
          for (int j = 0; j < kSt; ++j) {
            sc[mt][j][2 * h] = fast_exp2(sc[mt][j][2 * h] - mx);
            sc[mt][j][2 * h + 1] = fast_exp2(sc[mt][j][2 * h + 1] - mx);
            sum += sc[mt][j][2 * h] + sc[mt][j][2 * h + 1];
          }
          l[mt][h] = l[mt][h] * corr + sum;
#pragma unroll
          for (int j = 0; j < kOt; ++j) o[mt][j][2 * h] *= corr, o[mt][j][2 * h + 1] *= corr;
        }
        // O += P V: P's A fragment for keys 16kk..16kk+15 is score n-tiles 2kk, 2kk + 1; V's B
        // fragments (output n-tiles j, j + 1) from one transposing ldmatrix.x4, used by both row
        // tiles.
#pragma unroll
      for (int kk = 0; kk < kKt / 16; ++kk) {
        uint32_t a[2][4];
#pragma unroll
        for (int mt = 0; mt < 2; ++mt) {
          a[mt][0] = detail::pack_bf16(sc[mt][2 * kk][0], sc[mt][2 * kk][1]);
          a[mt][1] = detail::pack_bf16(sc[mt][2 * kk][2], sc[mt][2 * kk][3]);
          a[mt][2] = detail::pack_bf16(sc[mt][2 * kk + 1][0], sc[mt][2 * kk + 1][1]);
          a[mt][3] = detail::pack_bf16(sc[mt][2 * kk + 1][2], sc[mt][2 * kk + 1][3]);
        }
#pragma unroll
        for (int j = 0; j < kOt; j += 2) {
          uint32_t b[4];
          detail::ldmatrix_x4<true>(
              b, vs + detail::swizzle<kCpr>(16 * kk + 8 * (mi % 2) + mr, j + mi / 2) * 8);
#pragma unroll
          for (int mt = 0; mt < 2; ++mt) {
            detail::mma_bf16(o[mt][j], a[mt], b[0], b[1]);
            detail::mma_bf16(o[mt][j + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // every warp is done with the stage before it is refilled
  }
  detail::cp_async_wait<0>();

#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float sum = l[mt][h];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int row = warp * kWarpRows + 16 * mt + g + 8 * h;
      if (row >= rows) continue;
      const float inv = 1.0f / sum;
      const int64_t out_off = row_offset(row);
#pragma unroll
      for (int j = 0; j < kOt; ++j) {
        const int64_t at = out_off + 8 * j + 2 * t;
        detail::store(p.out, p.out_bf16, at, o[mt][j][2 * h] * inv);
        detail::store(p.out, p.out_bf16, at + 1, o[mt][j][2 * h + 1] * inv);
      }
    }
}

template <int D>
int launch_flash(const PagedAttentionCudaParams& p, cudaStream_t st) {
  const int G = static_cast<int>(p.num_q_heads / p.layout.num_kv_heads);
  const int mq = kRows / G;
  static const cudaError_t opt_in =  // above the default 48 KiB of dynamic shared memory
      cudaFuncSetAttribute(flash_prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(flash_smem_bytes<D>()));
  if (opt_in != cudaSuccess) return static_cast<int>(opt_in);
  int shift = 0;
  while ((int64_t{1} << shift) < p.layout.block_size) ++shift;
  // Upper bound of the tiles: every sequence may end with a partial one.
  const int64_t tiles = (p.num_tokens + mq - 1) / mq + p.num_seqs;
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.layout.num_kv_heads));
  flash_prefill_kernel<D><<<grid, kWarps * 32, flash_smem_bytes<D>(), st>>>(p, mq, shift);
  return detail::last_error();
}

}  // namespace

bool prefill_flash_supported(int64_t head_dim, int64_t group, int64_t block_size) {
  return (head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8 && block_size > 0 &&
         (block_size & (block_size - 1)) == 0;
}

int paged_prefill_flash(const PagedAttentionCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  const int64_t G = p.num_q_heads / p.layout.num_kv_heads;
  if (!prefill_flash_supported(p.layout.head_dim, G, p.layout.block_size))
    return static_cast<int>(cudaErrorInvalidValue);
  const auto st = detail::as_stream(stream);
  return p.layout.head_dim == 64 ? launch_flash<64>(p, st) : launch_flash<128>(p, st);
}

}  // namespace macserve::kernels::cuda
