// Flash attention on the tensor cores for prefill chunks and mixed steps over the paged bf16 cache.
//
// CTA = kWarps warps = one (tile of (query, q head) rows of one sequence, kv head). The rows of a
// tile are the G query heads of kv_rows / G consecutive queries (GQA packing: every K/V tile read
// serves all G heads). Each warp owns 16 rows; their queries (f32, pre-scaled by scale * log2 e)
// are rounded to bf16 A fragments once and stay in registers. Keys go in tiles of kKeys = 64: K and
// V rows are gathered through the block table with 16-byte cp.async into a kStages-deep
// shared-memory ring (swizzled for ldmatrix, zero-filled past the last key), S = Q K^T and O += P V
// run as mma.sync m16n8k16 (bf16 in, fp32 accumulate), the online softmax (base 2) works on the
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
constexpr int kRows = kWarps * 16;  // (query, q head) rows per CTA
constexpr int kKeys = 64;           // keys per tile
constexpr int kStages = 3;          // K/V tiles in flight
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
constexpr size_t flash_smem_bytes() {
  return size_t{kStages} * 2 * kKeys * D * sizeof(__nv_bfloat16);
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
__global__ void __launch_bounds__(kWarps * 32)
    flash_prefill_kernel(PagedAttentionCudaParams p, int mq) {
  constexpr int kCpr = D / 8;     // 16-byte chunks per K/V row
  constexpr int kKs = D / 16;     // k steps of Q K^T
  constexpr int kSt = kKeys / 8;  // score n-tiles per key tile
  constexpr int kOt = D / 8;      // output n-tiles
  extern __shared__ __align__(16) unsigned char smem_raw[];
  auto* smem = reinterpret_cast<__nv_bfloat16*>(smem_raw);

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

  // This lane's two rows (g and g + 8 of the warp's 16): keys seen, output offset. Padding rows
  // (past `rows`) see key 0 only, so every row has a finite maximum from the first tile on.
  int nk[2];
  int64_t out_off[2];
  bool valid[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = warp * 16 + g + 8 * h;
    valid[h] = row < rows;
    nk[h] = valid[h] ? first_keys + row / G : 1;
    out_off[h] =
        valid[h]
            ? (static_cast<int64_t>(q0 + t_begin + row / G) * p.num_q_heads + kvh * G + row % G) * D
            : 0;
  }
  // A fragments of Q: register h + 2 * half of k step kk holds row g + 8h, dims 16kk + 8half + 2t,
  // +1.
  uint32_t qf[kKs][4];
  const float qscale = p.scale * kLog2e;
#pragma unroll
  for (int kk = 0; kk < kKs; ++kk)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int h = i % 2, d = 16 * kk + 8 * (i / 2) + 2 * t;
      float2 v = make_float2(0.0f, 0.0f);
      if (valid[h]) v = *reinterpret_cast<const float2*>(p.q + out_off[h] + d);
      qf[kk][i] = detail::pack_bf16(v.x * qscale, v.y * qscale);
    }

  const auto* kc = static_cast<const __nv_bfloat16*>(p.k_cache);
  const auto* vc = static_cast<const __nv_bfloat16*>(p.v_cache);
  const int64_t head_off = static_cast<int64_t>(kvh) * L.block_size * D;
  const int bs = static_cast<int>(L.block_size);
  const int64_t block_stride = L.num_kv_heads * L.block_size * D;
  // Tile `it` into ring stage it % kStages: K then V, [kKeys][D] each, chunks swizzled.
  auto load_tile = [&](int it) {
    __nv_bfloat16* ks = smem + (it % kStages) * 2 * kKeys * D;
    __nv_bfloat16* vs = ks + kKeys * D;
    for (int i = static_cast<int>(threadIdx.x); i < kKeys * kCpr; i += kWarps * 32) {
      const int r = i / kCpr, c = i % kCpr, key = it * kKeys + r;
      const bool in = key < max_keys;
      int64_t off = 0;
      if (in)
        off = static_cast<int64_t>(table[key / bs]) * block_stride + head_off +
              static_cast<int64_t>(key % bs) * D + c * 8;
      const int at = detail::swizzle<kCpr>(r, c) * 8;
      detail::cp_async16_or_zero(ks + at, kc + off, in);
      detail::cp_async16_or_zero(vs + at, vc + off, in);
    }
  };

  float o[kOt][4];
#pragma unroll
  for (int j = 0; j < kOt; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  const int ntiles = (max_keys + kKeys - 1) / kKeys;
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
    __syncthreads();  // tile `it` has landed for every thread
    const __nv_bfloat16* ks = smem + (it % kStages) * 2 * kKeys * D;
    const __nv_bfloat16* vs = ks + kKeys * D;

    // S = Q K^T: B fragments of n-tiles j, j + 1 (keys 8j..8j+15) from one ldmatrix.x4.
    float sc[kSt][4];
#pragma unroll
    for (int j = 0; j < kSt; ++j) sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kKs; ++kk)
#pragma unroll
      for (int j = 0; j < kSt; j += 2) {
        uint32_t b[4];
        detail::ldmatrix_x4<false>(
            b, ks + detail::swizzle<kCpr>(8 * (j + mi / 2) + mr, 2 * kk + mi % 2) * 8);
        detail::mma_bf16(sc[j], qf[kk], b[0], b[1]);
        detail::mma_bf16(sc[j + 1], qf[kk], b[2], b[3]);
      }
    // Causal mask, only on tiles that reach past the first row's last key.
    const int base = it * kKeys;
    if (base + kKeys > first_keys) {
#pragma unroll
      for (int j = 0; j < kSt; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e)
          if (base + 8 * j + 2 * t + e % 2 >= nk[e / 2]) sc[j][e] = -INFINITY;
    }
    // Online softmax per row (registers e = 2h, 2h + 1 of every n-tile hold row g + 8h).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = m[h];
#pragma unroll
      for (int j = 0; j < kSt; ++j) mx = fmaxf(mx, fmaxf(sc[j][2 * h], sc[j][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float corr = exp2f(m[h] - mx);
      m[h] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < kSt; ++j) {
        sc[j][2 * h] = exp2f(sc[j][2 * h] - mx);
        sc[j][2 * h + 1] = exp2f(sc[j][2 * h + 1] - mx);
        sum += sc[j][2 * h] + sc[j][2 * h + 1];
      }
      l[h] = l[h] * corr + sum;
#pragma unroll
      for (int j = 0; j < kOt; ++j) o[j][2 * h] *= corr, o[j][2 * h + 1] *= corr;
    }
    // O += P V: P's A fragment for keys 16kk..16kk+15 is score n-tiles 2kk, 2kk + 1; V's B
    // fragments (output n-tiles j, j + 1) from one transposing ldmatrix.x4.
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint32_t a[4] = {detail::pack_bf16(sc[2 * kk][0], sc[2 * kk][1]),
                             detail::pack_bf16(sc[2 * kk][2], sc[2 * kk][3]),
                             detail::pack_bf16(sc[2 * kk + 1][0], sc[2 * kk + 1][1]),
                             detail::pack_bf16(sc[2 * kk + 1][2], sc[2 * kk + 1][3])};
#pragma unroll
      for (int j = 0; j < kOt; j += 2) {
        uint32_t b[4];
        detail::ldmatrix_x4<true>(
            b, vs + detail::swizzle<kCpr>(16 * kk + 8 * (mi % 2) + mr, j + mi / 2) * 8);
        detail::mma_bf16(o[j], a, b[0], b[1]);
        detail::mma_bf16(o[j + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // every warp is done with the stage before it is refilled
  }
  detail::cp_async_wait<0>();

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float sum = l[h];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    if (!valid[h]) continue;
    const float inv = 1.0f / sum;
#pragma unroll
    for (int j = 0; j < kOt; ++j) {
      const int64_t at = out_off[h] + 8 * j + 2 * t;
      detail::store(p.out, p.out_bf16, at, o[j][2 * h] * inv);
      detail::store(p.out, p.out_bf16, at + 1, o[j][2 * h + 1] * inv);
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
  // Upper bound of the tiles: every sequence may end with a partial one.
  const int64_t tiles = (p.num_tokens + mq - 1) / mq + p.num_seqs;
  dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.layout.num_kv_heads));
  flash_prefill_kernel<D><<<grid, kWarps * 32, flash_smem_bytes<D>(), st>>>(p, mq);
  return detail::last_error();
}

}  // namespace

bool prefill_flash_supported(int64_t head_dim, int64_t group) {
  return (head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8;
}

int paged_prefill_flash(const PagedAttentionCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  const int64_t G = p.num_q_heads / p.layout.num_kv_heads;
  if (!prefill_flash_supported(p.layout.head_dim, G))
    return static_cast<int>(cudaErrorInvalidValue);
  const auto st = detail::as_stream(stream);
  return p.layout.head_dim == 64 ? launch_flash<64>(p, st) : launch_flash<128>(p, st);
}

}  // namespace macserve::kernels::cuda
