// Flash attention on the tensor cores for prefill chunks and mixed steps over the paged bf16 cache,
// and --deterministic's attention for every step (paged_attention_fixed).
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
//
// Fixed key segments (--deterministic): keys are cut at every multiple of kFixedSegmentKeys. A
// row's online softmax restarts at each segment, and the segments' states (max, sum, unnormalised
// output) are folded in segment order by one function (fold_weights, fold_value). Prefill rows
// (kFold) fold each segment after its pass over the keys, the running state in f32 scratch between
// segments; decode rows (one query: kSplit) compute their segments in parallel CTAs of one warp and
// a combine kernel folds the saved states. A segment's state is the same bits in both (the same
// tile loop from the segment's first key), and so is the fold: a row's result does not depend on
// which path it took, on the batch, or on the chunking, while a decode row's keys are spread over
// the GPU. Where the Hopper kernel runs (prefill_wgmma_supported), both passes run on it instead
// (paged_prefill_wgmma.cu), with the same fold and the same combine kernel.
#include <algorithm>
#include <cmath>

#include "../cuda_util.cuh"
#include "../mma.cuh"
#include "fixed_segments.cuh"
#include "macserve/kernels/cuda/attention.cuh"
#include "prefill_tiles.cuh"

namespace macserve::kernels::cuda {
namespace {

using detail::fast_exp2;
using detail::find_query_tile;
using detail::FixedArgs;
using detail::fold_value;
using detail::fold_weights;
using detail::FoldWeights;
using detail::kLog2e;
using detail::num_queries;
using detail::tile_rows;
using detail::TileRef;
using detail::TileRows;

constexpr int kStages = 3;  // K/V tiles in flight
// Keys per tile: 32 at head_dim 128 keeps the scores, the output and the fragments of two row
// tiles within 255 registers.
template <int D>
constexpr int kKeys = D == 128 ? 32 : 64;

enum class Mode {
  kPlain,  // one online softmax over all of a row's keys (the default prefill path)
  kFold,   // fixed segments folded in order, rows of sequences with more than one query
  kSplit,  // fixed segments, one state per segment saved for the combine: one-query sequences
};

// Launch shape of a mode: warps per CTA and m16 row tiles per warp. A row's arithmetic does not
// depend on either (every row is its own mma row, its own softmax).
template <Mode M>
constexpr int kWarpsOf = M == Mode::kSplit ? 1 : 4;
template <Mode M>
constexpr int kRowTilesOf = M == Mode::kSplit ? 1 : 2;
template <Mode M>
constexpr int kRowsOf = kWarpsOf<M> * 16 * kRowTilesOf<M>;  // (query, q head) rows per CTA

template <int D, Mode M>
constexpr size_t flash_smem_bytes() {
  return (size_t{kRowsOf<M>} * D + size_t{kStages} * 2 * kKeys<D> * D) * sizeof(__nv_bfloat16);
}

// This CTA's tile: kSplit CTAs take one one-query sequence per grid column, the others a tile of
// the step's query runs (kFold leaves one-query sequences to kSplit).
template <Mode M>
__device__ bool find_tile(const PagedAttentionCudaParams& p, int mq, TileRef* ref) {
  if constexpr (M == Mode::kSplit) {
    const int s = static_cast<int>(blockIdx.x);
    if (num_queries(p, s) != 1 || (p.skip != nullptr && p.skip[s] == 1)) return false;
    *ref = {s, 0};
    return true;
  } else {
    return find_query_tile(p, mq, M == Mode::kFold, ref);
  }
}

template <int D, Mode M>
__global__ void __launch_bounds__(kWarpsOf<M> * 32, M == Mode::kSplit ? 4 : 2)
    flash_prefill_kernel(PagedAttentionCudaParams p, FixedArgs f, int mq, int block_shift) {
  constexpr int kW = kWarpsOf<M>, kMt = kRowTilesOf<M>, kRows = kRowsOf<M>;
  constexpr int kWarpRows = 16 * kMt;
  constexpr int kKt = kKeys<D>;
  constexpr int kCpr = D / 8;   // 16-byte chunks per Q/K/V row
  constexpr int kKs = D / 16;   // k steps of Q K^T
  constexpr int kSt = kKt / 8;  // score n-tiles per key tile
  constexpr int kOt = D / 8;    // output n-tiles
  constexpr int kSegTiles = kFixedSegmentKeys / kKt;
  static_assert(kFixedSegmentKeys % kKt == 0);
  extern __shared__ __align__(128) unsigned char smem_raw[];
  auto* q_s = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kRows][D], swizzled
  __nv_bfloat16* kv_s = q_s + kRows * D;                   // per stage: K then V, [kKt][D]

  TileRef ref{};
  if (!find_tile<M>(p, mq, &ref)) return;
  const PagedKvLayout L = p.layout;
  const int G = static_cast<int>(p.num_q_heads / L.num_kv_heads);
  const int kvh = static_cast<int>(blockIdx.y), s = ref.seq;
  const TileRows tr = tile_rows(p, ref, mq, G);
  const int q0 = tr.q0, t_begin = tr.t_begin, rows = tr.rows;
  const int first_keys = tr.first_keys, max_keys = tr.max_keys;
  const int32_t* table = p.block_tables + static_cast<int64_t>(s) * p.max_blocks_per_seq;
  const int warp = static_cast<int>(threadIdx.x) / 32, lane = static_cast<int>(threadIdx.x) % 32;
  const int g = lane / 4, t = lane % 4;
  const auto row_offset = [&](int row) {  // element offset of a tile row in q and out
    return (static_cast<int64_t>(q0 + t_begin + row / G) * p.num_q_heads + kvh * G + row % G) * D;
  };

  // The tile's queries times scale * log2 e, rounded to bf16, into shared memory (zero rows past
  // `rows`).
  const float qscale = p.scale * kLog2e;
  for (int i = static_cast<int>(threadIdx.x); i < kRows * kCpr; i += kW * 32) {
    const int r = i / kCpr, c = i % kCpr;
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (r < rows) {
      packed = detail::load_scaled_bf16x8(p.q + row_offset(r) + c * 8, qscale);
    }
    *reinterpret_cast<uint4*>(q_s + detail::swizzle<kCpr>(r, c) * 8) = packed;
  }
  // This lane's rows: g + 8h of row tile mt of the warp, and the keys each sees. Padding rows
  // (past `rows`) see key 0 only, so every row has a finite maximum from the first tile on
  // (kPlain; the segment modes never use a row past its keys).
  const auto row_of = [&](int mt, int h) { return warp * kWarpRows + 16 * mt + g + 8 * h; };
  int nk[kMt][2];
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row_of(mt, h);
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
    for (int i = static_cast<int>(threadIdx.x); i < kKt * kCpr; i += kW * 32) {
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

  float o[kMt][kOt][4], m[kMt][2], l[kMt][2];
  const auto reset = [&] {
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt) {
#pragma unroll
      for (int j = 0; j < kOt; ++j) o[mt][j][0] = o[mt][j][1] = o[mt][j][2] = o[mt][j][3] = 0.0f;
      m[mt][0] = m[mt][1] = -INFINITY, l[mt][0] = l[mt][1] = 0.0f;
    }
  };
  // A row's sum over its quad (each lane holds its own columns' share).
  const auto row_sum = [](float v) {
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
  };
  const int mi = lane / 8, mr = lane % 8;  // ldmatrix: this lane addresses row mr of matrix mi

  // One key tile into the row state: S = Q K^T, mask, online softmax, O += P V.
  const auto attend_tile = [&](int it) {
    const __nv_bfloat16* ks = kv_s + (it % kStages) * 2 * kKt * D;
    const __nv_bfloat16* vs = ks + kKt * D;
    // S = Q K^T: per k step, A fragments of the row tiles, then B fragments of n-tiles j, j + 1
    // (keys 8j..8j+15) from one ldmatrix.x4, each used by every row tile.
    float sc[kMt][kSt][4];
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int j = 0; j < kSt; ++j)
        sc[mt][j][0] = sc[mt][j][1] = sc[mt][j][2] = sc[mt][j][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kKs; ++kk) {
      uint32_t a[kMt][4];
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
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
        for (int mt = 0; mt < kMt; ++mt) {
          detail::mma_bf16(sc[mt][j], a[mt], b[0], b[1]);
          detail::mma_bf16(sc[mt][j + 1], a[mt], b[2], b[3]);
        }
      }
    }
    // Causal mask, only on tiles that reach past the first row's last key.
    const int base = it * kKt;
    if (base + kKt > first_keys) {
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
        for (int j = 0; j < kSt; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (base + 8 * j + 2 * t + e % 2 >= nk[mt][e / 2]) sc[mt][j][e] = -INFINITY;
    }
    // Online softmax per row (registers e = 2h, 2h + 1 of every n-tile hold row g + 8h).
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float mx = m[mt][h];
#pragma unroll
        for (int j = 0; j < kSt; ++j) mx = fmaxf(mx, fmaxf(sc[mt][j][2 * h], sc[mt][j][2 * h + 1]));
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
        l[mt][h] = __fmaf_rn(l[mt][h], corr, sum);
#pragma unroll
        for (int j = 0; j < kOt; ++j) o[mt][j][2 * h] *= corr, o[mt][j][2 * h + 1] *= corr;
      }
      // O += P V: P's A fragment for keys 16kk..16kk+15 is score n-tiles 2kk, 2kk + 1; V's B
      // fragments (output n-tiles j, j + 1) from one transposing ldmatrix.x4, used by every row
      // tile.
#pragma unroll
    for (int kk = 0; kk < kKt / 16; ++kk) {
      uint32_t a[kMt][4];
#pragma unroll
      for (int mt = 0; mt < kMt; ++mt) {
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
        for (int mt = 0; mt < kMt; ++mt) {
          detail::mma_bf16(o[mt][j], a[mt], b[0], b[1]);
          detail::mma_bf16(o[mt][j + 1], a[mt], b[2], b[3]);
        }
      }
    }
  };

  // A row's final output: o / l.
  const auto write_row = [&](int mt, int h, int row, float sum) {
    const float inv = 1.0f / sum;
    const int64_t out_off = row_offset(row);
#pragma unroll
    for (int j = 0; j < kOt; ++j) {
      const int64_t at = out_off + 8 * j + 2 * t;
      detail::store(p.out, p.out_bf16, at, o[mt][j][2 * h] * inv);
      detail::store(p.out, p.out_bf16, at + 1, o[mt][j][2 * h + 1] * inv);
    }
  };

  // kFold, at the end of segment `seg`: each row with keys in it folds the segment into its
  // running state (the first segment is the running state), then either keeps the running state
  // in f32 scratch for the next segment or, at its last segment, writes its result. (The running
  // max and sum live in scratch too, not in registers: the tile loop needs them all. The four
  // lanes of a row hold the same values and each writes and reads its own copy's address.)
  const auto fold_segment = [&](int seg) {
    const int seg_begin = seg * kFixedSegmentKeys, seg_end = seg_begin + kFixedSegmentKeys;
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float l_seg = row_sum(l[mt][h]);
        const int row = row_of(mt, h);
        if (row >= rows || nk[mt][h] <= seg_begin) continue;
        const int64_t at = row_offset(row);
        float* run = f.fold_o + at + 2 * t;
        auto* ml = reinterpret_cast<float2*>(f.fold_ml + 2 * (at / D));
        float m_run = m[mt][h], l_run = l_seg;
        if (seg > 0) {
          const float2 prev = *ml;
          m_run = prev.x, l_run = prev.y;
          const FoldWeights w = fold_weights(m_run, l_run, m[mt][h], l_seg);
#pragma unroll
          for (int j = 0; j < kOt; ++j) {
            const float2 r = *reinterpret_cast<const float2*>(run + 8 * j);
            o[mt][j][2 * h] = fold_value(r.x, o[mt][j][2 * h], w);
            o[mt][j][2 * h + 1] = fold_value(r.y, o[mt][j][2 * h + 1], w);
          }
        }
        if (nk[mt][h] > seg_end) {
#pragma unroll
          for (int j = 0; j < kOt; ++j)
            *reinterpret_cast<float2*>(run + 8 * j) =
                make_float2(o[mt][j][2 * h], o[mt][j][2 * h + 1]);
          *ml = make_float2(m_run, l_run);
        } else {
          write_row(mt, h, row, l_run);
        }
      }
    reset();
  };

  // kSplit, at the end of segment `seg`: the rows' states as they are, for the combine.
  const auto save_segment = [&](int seg) {
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float l_seg = row_sum(l[mt][h]);
        const int row = row_of(mt, h);
        if (row >= rows) continue;
        const int64_t at =
            (static_cast<int64_t>(s) * p.num_q_heads + kvh * G + row % G) * f.max_segments + seg;
        float* dst = f.part_o + at * D + 2 * t;
#pragma unroll
        for (int j = 0; j < kOt; ++j)
          *reinterpret_cast<float2*>(dst + 8 * j) =
              make_float2(o[mt][j][2 * h], o[mt][j][2 * h + 1]);
        if (t == 0) *reinterpret_cast<float2*>(f.part_ml + 2 * at) = make_float2(m[mt][h], l_seg);
      }
    reset();
  };

  // Key tiles [it0, it1) through the ring into the row state.
  const auto run_tiles = [&](int it0, int it1) {
#pragma unroll
    for (int i = 0; i < kStages - 1; ++i) {
      if (it0 + i < it1) load_tile(it0 + i);
      detail::cp_async_commit();
    }
    for (int it = it0; it < it1; ++it) {
      if (it + kStages - 1 < it1) load_tile(it + kStages - 1);
      detail::cp_async_commit();
      detail::cp_async_wait<kStages - 1>();
      __syncthreads();  // tile `it` (and, the first time, q_s) is there for every thread
      if (warp_active) attend_tile(it);
      __syncthreads();  // every warp is done with the stage before it is refilled
    }
    detail::cp_async_wait<0>();
  };

  reset();
  const int ntiles = (max_keys + kKt - 1) / kKt;
  const int nseg = (max_keys + kFixedSegmentKeys - 1) / kFixedSegmentKeys;  // segment modes
  if constexpr (M == Mode::kPlain) {
    run_tiles(0, ntiles);
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float sum = row_sum(l[mt][h]);
        const int row = row_of(mt, h);
        if (row < rows) write_row(mt, h, row, sum);
      }
  } else if constexpr (M == Mode::kFold) {
    for (int seg = 0; seg < nseg; ++seg) {
      run_tiles(seg * kSegTiles, min(ntiles, (seg + 1) * kSegTiles));
      if (warp_active) fold_segment(seg);
    }
  } else {
    for (int seg = static_cast<int>(blockIdx.z); seg < nseg; seg += static_cast<int>(gridDim.z)) {
      run_tiles(seg * kSegTiles, min(ntiles, (seg + 1) * kSegTiles));
      if (warp_active) save_segment(seg);
    }
  }
}

// kSplit's second half: one warp per (one-query sequence, q head) folds the saved segments in
// order and writes o / l.
template <int D>
__global__ void __launch_bounds__(128)
    fixed_combine_kernel(PagedAttentionCudaParams p, FixedArgs f) {
  constexpr int kPer = D / 32;  // dims per lane
  const int s = static_cast<int>(blockIdx.x);
  const int head = static_cast<int>(blockIdx.y) * 4 + static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  if (head >= p.num_q_heads || num_queries(p, s) != 1 || (p.skip != nullptr && p.skip[s] == 1))
    return;
  const int nseg = (p.context_lens[s] + kFixedSegmentKeys - 1) / kFixedSegmentKeys;
  const int64_t first = (static_cast<int64_t>(s) * p.num_q_heads + head) * f.max_segments;
  float o[kPer] = {};
  float m_run = 0.0f, l_run = 0.0f;
  for (int seg = 0; seg < nseg; ++seg) {
    const float2 ml = *reinterpret_cast<const float2*>(f.part_ml + 2 * (first + seg));
    const float* src = f.part_o + (first + seg) * D + lane * kPer;
    if (seg == 0) {
      m_run = ml.x, l_run = ml.y;
#pragma unroll
      for (int i = 0; i < kPer; ++i) o[i] = src[i];
    } else {
      const FoldWeights w = fold_weights(m_run, l_run, ml.x, ml.y);
#pragma unroll
      for (int i = 0; i < kPer; ++i) o[i] = fold_value(o[i], src[i], w);
    }
  }
  const float inv = nseg > 0 ? 1.0f / l_run : 0.0f;  // no keys: zeros
  const int64_t out_off = (static_cast<int64_t>(p.query_start[s]) * p.num_q_heads + head) * D;
#pragma unroll
  for (int i = 0; i < kPer; ++i)
    detail::store(p.out, p.out_bf16, out_off + lane * kPer + i, o[i] * inv);
}

int block_shift_of(int64_t block_size) {
  int shift = 0;
  while ((int64_t{1} << shift) < block_size) ++shift;
  return shift;
}

template <int D, Mode M>
int launch_flash(const PagedAttentionCudaParams& p, const FixedArgs& f, cudaStream_t st) {
  const int G = static_cast<int>(p.num_q_heads / p.layout.num_kv_heads);
  const int mq = kRowsOf<M> / G;
  static const cudaError_t opt_in =  // above the default 48 KiB of dynamic shared memory
      cudaFuncSetAttribute(flash_prefill_kernel<D, M>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(flash_smem_bytes<D, M>()));
  if (opt_in != cudaSuccess) return static_cast<int>(opt_in);
  dim3 grid;
  if constexpr (M == Mode::kSplit) {
    // Sequences x kv heads x segment slots.
    const int64_t z = detail::fixed_segment_slots(p, f);
    grid = dim3(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.layout.num_kv_heads),
                static_cast<unsigned>(z));
  } else {
    // Upper bound of the tiles: every sequence may end with a partial one.
    const int64_t tiles = (p.num_tokens + mq - 1) / mq + p.num_seqs;
    grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(p.layout.num_kv_heads));
  }
  flash_prefill_kernel<D, M><<<grid, kWarpsOf<M> * 32, flash_smem_bytes<D, M>(), st>>>(
      p, f, mq, block_shift_of(p.layout.block_size));
  return detail::last_error();
}

template <int D>
int launch_fixed(const PagedAttentionCudaParams& p, int64_t max_query_len, const FixedArgs& f,
                 cudaStream_t st) {
  const int64_t G = p.num_q_heads / p.layout.num_kv_heads;
  if (prefill_wgmma_supported(D, G, p.layout.block_size)) {
    const int rc = detail::fixed_segments_wgmma(p, max_query_len, f, st);
    if (rc != 0) return rc;
  } else {
    if (max_query_len != 1) {  // sequences with more than one query (0: not known)
      const int rc = launch_flash<D, Mode::kFold>(p, f, st);
      if (rc != 0) return rc;
    }
    const int rc = launch_flash<D, Mode::kSplit>(p, f, st);
    if (rc != 0) return rc;
  }
  const dim3 grid(static_cast<unsigned>(p.num_seqs),
                  static_cast<unsigned>((p.num_q_heads + 3) / 4));
  fixed_combine_kernel<D><<<grid, 128, 0, st>>>(p, f);
  return detail::last_error();
}

// Segments a one-query row of this step may have: the block table's width in keys.
int64_t max_segments_of(const PagedAttentionCudaParams& p) {
  const int64_t keys = p.max_blocks_per_seq * p.layout.block_size;
  return std::max<int64_t>(1, (keys + kFixedSegmentKeys - 1) / kFixedSegmentKeys);
}

}  // namespace

bool prefill_flash_supported(int64_t head_dim, int64_t group, int64_t block_size) {
  return (head_dim == 64 || head_dim == 128) && group >= 1 && group <= 8 && block_size > 0 &&
         (block_size & (block_size - 1)) == 0;
}

int paged_prefill_flash(const PagedAttentionCudaParams& p, Stream stream) {
  const int64_t G = p.num_q_heads / p.layout.num_kv_heads;
  if (prefill_wgmma_supported(p.layout.head_dim, G, p.layout.block_size))
    return paged_prefill_wgmma(p, stream);
  return paged_prefill_flash_mma(p, stream);
}

int paged_prefill_flash_mma(const PagedAttentionCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  const int64_t G = p.num_q_heads / p.layout.num_kv_heads;
  if (!prefill_flash_supported(p.layout.head_dim, G, p.layout.block_size))
    return static_cast<int>(cudaErrorInvalidValue);
  const auto st = detail::as_stream(stream);
  return p.layout.head_dim == 64 ? launch_flash<64, Mode::kPlain>(p, {}, st)
                                 : launch_flash<128, Mode::kPlain>(p, {}, st);
}

int64_t fixed_attention_workspace_floats(const PagedAttentionCudaParams& p) {
  const int64_t D = p.layout.head_dim;
  return (p.num_tokens + p.num_seqs * max_segments_of(p)) * p.num_q_heads * (D + 2);
}

int paged_attention_fixed(const PagedAttentionCudaParams& p, int64_t max_query_len,
                          float* workspace, Stream stream) {
  if (p.num_tokens == 0) return 0;
  const int64_t G = p.num_q_heads / p.layout.num_kv_heads;
  if (!prefill_flash_supported(p.layout.head_dim, G, p.layout.block_size) || workspace == nullptr)
    return static_cast<int>(cudaErrorInvalidValue);
  FixedArgs f;
  f.max_segments = static_cast<int>(max_segments_of(p));
  const int64_t fold_rows = p.num_tokens * p.num_q_heads;
  const int64_t part_rows = p.num_seqs * p.num_q_heads * f.max_segments;
  f.fold_o = workspace;
  f.fold_ml = f.fold_o + fold_rows * p.layout.head_dim;
  f.part_o = f.fold_ml + fold_rows * 2;
  f.part_ml = f.part_o + part_rows * p.layout.head_dim;
  const auto st = detail::as_stream(stream);
  return p.layout.head_dim == 64 ? launch_fixed<64>(p, max_query_len, f, st)
                                 : launch_fixed<128>(p, max_query_len, f, st);
}

}  // namespace macserve::kernels::cuda
