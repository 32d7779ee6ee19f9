// Flash attention for prefill chunks and mixed steps on Hopper's warpgroup MMA (sm_90a): the
// default path of paged_prefill_flash for head_dim 64 and 128 with block sizes of 8 or more.
//
// CTA = 3 warpgroups over one tile of 128 (query, q head) rows of one sequence and one KV head
// (GQA packing, prefill_tiles.cuh). Warpgroup 0 is the producer: one thread walks the tile's key
// tiles (128 keys each) and gathers their K and V pages through the block table with TMA (a 2-D
// tensor map over the cache's rows of head_dim bf16, one box per page or per 128 keys of a larger
// page, 128-byte swizzle) into a ring of shared-memory stages, each stage's K and V completing
// their own mbarrier. Warpgroups 1 and 2 (the consumers, registers moved to them from the
// producer) own 64 rows each: S = Q K^T as wgmma m64n128k16 with both operands in shared memory
// (Q rounded to bf16 and scaled by scale * log2 e once, K-major), the causal mask and the online
// softmax (base 2) on the score registers, P rounded to bf16 in registers as the A operand of
// O += P V (wgmma with V read N-major from its stage), then an arrival on the stage's `empty`
// barrier hands it back to the producer. While one consumer runs its softmax, the other's MMAs
// keep the tensor cores busy.
//
// Key tiles start at key 0 for every row, and a row's masked keys add exact zeros (V rows past the
// last key are zeroed in shared memory, so stale or unwritten cache never reaches a row), so a
// row's result depends on its own query and keys only: the same bits whatever the chunking, the
// batch or the row's place in its tile.
//
// --deterministic's fixed key segments run on it too (fixed_segments.cuh; kFold and kSplit): the
// key tiles of each 1024-key segment from an empty state, the segment then folded into the row's
// running state in scratch (prefill rows) or saved for the combine kernel (one-query rows, one CTA
// per sequence, kv head and segment slot; its second consumer's rows are padding). Both walk the
// same per-row arithmetic, so a row's bits are the same on either path.
//
// The same kernel writes MAC's ring rows for prefill chunks (mac_prefill_rows_wgmma, kRing): the
// tile's rows are then the chunk's tokens that own a ring row (positions >= max(rows_from, context
// - M) of an exact-mode sequence with a slot), a row at position i sees keys [0, i + 1 - band)
// instead of [0, i], and the epilogue stores (q_pre, o, lse) into the ring row i % M.
#include <cuda.h>

#include <algorithm>

#include "../cuda_util.cuh"
#include "../hopper.cuh"
#include "../mma.cuh"
#include "../tma_map.cuh"
#include "fixed_segments.cuh"
#include "macserve/kernels/cuda/mac_attention_cuda.h"
#include "prefill_tiles.cuh"

namespace macserve::kernels::cuda {
namespace {

using detail::fast_exp2;
using detail::kLn2;
using detail::kLog2e;

constexpr int kRows = 128;         // (query, q head) rows per CTA
constexpr int kKeys = 128;         // keys per tile
constexpr int kThreads = 3 * 128;  // producer + two consumer warpgroups
constexpr int kRowBytes = 128;     // one SW128 row: 64 bf16
constexpr int kProducerRegs = 40;  // setmaxnreg: 128 x 40 + 256 x 232 <= 64K registers
constexpr int kConsumerRegs = 232;

// What the ring-row variant reads beyond PagedAttentionCudaParams (unused otherwise).
struct RingRows {
  const float* q_pre;
  const int32_t* ring_slots;
  const int32_t* rows_from;
  const int8_t* modes;
  MacRing ring;
  int window, band;
  bool bf16;
};

// What a CTA computes: kPlain, the default prefill rows; kRing, MAC's ring rows (RingRows);
// --deterministic's fixed key segments (fixed_segments.cuh): kFold, rows of sequences with more
// than one query, each segment folded into the row's running state in scratch as it ends; kSplit,
// one-query rows, one CTA per (sequence, kv head, segment slot) saving each segment's state for
// the combine kernel. Every variant runs the same per-row arithmetic over a key tile.
enum class Variant { kPlain, kRing, kFold, kSplit };

// A sequence's rows in the ring variant: its chunk tokens from `skip` on (`count` of them, the
// first at position `first_pos`); none unless it is exact-mode with a ring slot.
struct SeqRows {
  int skip, count, first_pos;
};
__device__ __forceinline__ SeqRows ring_rows_of(const PagedAttentionCudaParams& p,
                                                const RingRows& rr, int s) {
  if (rr.modes[s] != kMacExact || rr.ring_slots[s] < 0) return {0, 0, 0};
  const int n = detail::num_queries(p, s), ctx = p.context_lens[s], first = ctx - n;
  const int lo = max(first, max(rr.rows_from[s], ctx - rr.window));
  return {lo - first, max(0, ctx - lo), lo};
}

// The ring variant's tile of this CTA (numbered as detail::find_query_tile numbers them) and its
// rows; a row whose position is below `band` sees no key (first_keys + row / G <= 0).
__device__ __forceinline__ bool find_ring_tile(const PagedAttentionCudaParams& p,
                                               const RingRows& rr, int mq, int G,
                                               detail::TileRef* ref, detail::TileRows* tr) {
  int tile = static_cast<int>(gridDim.x) - 1 - static_cast<int>(blockIdx.x);
  for (int s = 0; s < p.num_seqs; ++s) {
    const SeqRows r = ring_rows_of(p, rr, s);
    const int nt = (r.count + mq - 1) / mq;
    if (tile < nt) {
      const int t_begin = tile * mq, t_end = min(r.count, t_begin + mq);
      *ref = {s, tile};
      *tr = {p.query_start[s] + r.skip, t_begin, (t_end - t_begin) * G,
             r.first_pos + t_begin + 1 - rr.band, r.first_pos + t_end - rr.band};
      return true;
    }
    tile -= nt;
  }
  return false;
}

template <int D>
struct Shape {
  static constexpr int kHalves = D / 64;            // SW128 column blocks of a row
  static constexpr int kStages = D == 128 ? 3 : 4;  // K/V tiles in flight
  static constexpr int kQBytes = kHalves * kRows * kRowBytes;
  static constexpr int kTileBytes = kHalves * kKeys * kRowBytes;  // K (or V) of one key tile
  static constexpr int kStageBytes = 2 * kTileBytes;
  static constexpr int kBarriers = 3 * kStages;  // full_k, full_v, empty
  static constexpr size_t kSmem = 1024 /* alignment slack */ + kQBytes +
                                  size_t{kStages} * kStageBytes + kBarriers * sizeof(uint64_t);
};

template <int D, Variant V>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_prefill_kernel(const PagedAttentionCudaParams p, const __grid_constant__ CUtensorMap tk,
                         const __grid_constant__ CUtensorMap tv, int mq, int block_shift,
                         int box_rows, const RingRows rr, const detail::FixedArgs f) {
  using S = Shape<D>;
  constexpr bool kRing = V == Variant::kRing;
  constexpr bool kFixed = V == Variant::kFold || V == Variant::kSplit;
  constexpr int kH = S::kHalves, kStages = S::kStages;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* base = smem_raw + ((1024 - (detail::smem_addr(smem_raw) & 1023)) & 1023);
  unsigned char* q_s = base;                // [kH][kRows][64] bf16, SW128
  unsigned char* kv_s = base + S::kQBytes;  // per stage: K [kH][kKeys][64], then V the same
  auto* bars = reinterpret_cast<uint64_t*>(kv_s + kStages * S::kStageBytes);
  uint64_t* full_k = bars;
  uint64_t* full_v = bars + kStages;
  uint64_t* empty = bars + 2 * kStages;

  const PagedKvLayout L = p.layout;
  const int G = static_cast<int>(p.num_q_heads / L.num_kv_heads);
  detail::TileRef ref{};
  detail::TileRows tr{};
  if constexpr (kRing) {
    if (!find_ring_tile(p, rr, mq, G, &ref, &tr)) return;
    // Rows that see no key are computed over key 0 and stored as empty (o 0, lse -inf).
    tr.max_keys = max(tr.max_keys, 1);
  } else if constexpr (V == Variant::kSplit) {
    const int s = static_cast<int>(blockIdx.x);
    if (detail::num_queries(p, s) != 1 || (p.skip != nullptr && p.skip[s] == 1)) return;
    ref = {s, 0};
    tr = detail::tile_rows(p, ref, mq, G);
  } else {
    if (!detail::find_query_tile(p, mq, V == Variant::kFold, &ref)) return;
    tr = detail::tile_rows(p, ref, mq, G);
  }
  const int kvh = static_cast<int>(blockIdx.y);
  const int ntiles = (tr.max_keys + kKeys - 1) / kKeys;
  // The key tiles this CTA walks, `count` of them: all (kPlain, kRing), or segment after segment
  // (kSegTiles tiles each, the last one possibly fewer): every segment (kFold), or segments z,
  // z + Z, ... of slot z (kSplit). Processed tile i is key tile key_tile(i).
  constexpr int kSegTiles = static_cast<int>(kFixedSegmentKeys / kKeys);
  static_assert(kFixedSegmentKeys % kKeys == 0, "segments are whole key tiles");
  const int nseg = (tr.max_keys + kSegTiles * kKeys - 1) / (kSegTiles * kKeys);
  const int seg0 = V == Variant::kSplit ? static_cast<int>(blockIdx.z) : 0;
  const int zstep = V == Variant::kSplit ? static_cast<int>(gridDim.z) : 1;
  int count = ntiles;
  if constexpr (kFixed) {
    if (seg0 >= nseg) return;
    const int owned = (nseg - 1 - seg0) / zstep + 1, last = seg0 + (owned - 1) * zstep;
    count = (owned - 1) * kSegTiles + min(ntiles, (last + 1) * kSegTiles) - last * kSegTiles;
  }
  const auto key_tile = [&](int i) {
    return kFixed ? (seg0 + (i / kSegTiles) * zstep) * kSegTiles + i % kSegTiles : i;
  };
  const auto segment_ends = [&](int i) {  // processed tile i closes a segment
    return i + 1 == count || (kFixed && i % kSegTiles == kSegTiles - 1);
  };
  const int wg = static_cast<int>(threadIdx.x) / 128, tid = static_cast<int>(threadIdx.x) % 128;

  if (threadIdx.x == 0) {
    for (int i = 0; i < kStages; ++i) {
      detail::mbar_init(&full_k[i], 1);
      detail::mbar_init(&full_v[i], 1);
      detail::mbar_init(&empty[i], 8);  // one arrival per consumer warp
    }
    detail::mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {  // producer
    detail::regs_dealloc<kProducerRegs>();
    if (tid != 0) return;
    detail::tma_prefetch_descriptor(&tk);
    detail::tma_prefetch_descriptor(&tv);
    const int32_t* table = p.block_tables + static_cast<int64_t>(ref.seq) * p.max_blocks_per_seq;
    const int in_block = (1 << block_shift) - 1;
    const int boxes = kKeys / box_rows;
    for (int i = 0; i < count; ++i) {
      const int st = i % kStages;
      if (i >= kStages) detail::mbar_wait(&empty[st], ((i / kStages) - 1) & 1);
      const int key0 = key_tile(i) * kKeys;
      const int nbox = min(boxes, (tr.max_keys - key0 + box_rows - 1) / box_rows);
      const uint32_t bytes = static_cast<uint32_t>(nbox * box_rows * kRowBytes * kH);
      unsigned char* ks = kv_s + st * S::kStageBytes;
      unsigned char* vs = ks + S::kTileBytes;
      detail::mbar_arrive_expect_tx(&full_k[st], bytes);
      detail::mbar_arrive_expect_tx(&full_v[st], bytes);
      for (int b = 0; b < nbox; ++b) {
        const int key = key0 + b * box_rows;
        const int row = (table[key >> block_shift] * static_cast<int>(L.num_kv_heads) + kvh) *
                            static_cast<int>(L.block_size) +
                        (key & in_block);
#pragma unroll
        for (int h = 0; h < kH; ++h) {
          const int at = h * kKeys * kRowBytes + b * box_rows * kRowBytes;
          detail::tma_load_2d(ks + at, &tk, &full_k[st], h * 64, row);
          detail::tma_load_2d(vs + at, &tv, &full_v[st], h * 64, row);
        }
      }
    }
    return;
  }

  // Consumers: warpgroup c owns tile rows 64c..64c+63; this thread holds rows r0 and r0 + 8.
  detail::regs_alloc<kConsumerRegs>();
  const int c = wg - 1, warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
  const auto row_offset = [&](int row) {  // element offset of a tile row in q and out
    return (static_cast<int64_t>(tr.q0 + tr.t_begin + row / G) * p.num_q_heads + kvh * G +
            row % G) *
           D;
  };

  // Q rows (f32) times scale * log2 e, rounded to bf16, into SW128 (zero rows past tr.rows).
  const float qscale = p.scale * kLog2e;
  for (int i = tid; i < 64 * (D / 8); i += 128) {
    const int r = 64 * c + i / (D / 8), ch = i % (D / 8);
    uint4 packed = make_uint4(0, 0, 0, 0);
    if (r < tr.rows) {
      packed = detail::load_scaled_bf16x8(p.q + row_offset(r) + ch * 8, qscale);
    }
    const int at = (ch / 8) * kRows * kRowBytes + r * kRowBytes + (((ch % 8) ^ (r & 7)) * 16);
    *reinterpret_cast<uint4*>(q_s + at) = packed;
  }
  detail::fence_proxy_async();
  detail::named_barrier(1 + c, 128);
  if (V == Variant::kSplit && 64 * c >= tr.rows) {
    // No row of this consumer (one query's G rows): hand each stage back once it has been filled
    // (an earlier arrival would count towards the stage's previous use), without the MMAs.
    for (int i = 0; i < count; ++i) {
      detail::mbar_wait(&full_k[i % kStages], static_cast<uint32_t>((i / kStages) & 1));
      detail::mbar_wait(&full_v[i % kStages], static_cast<uint32_t>((i / kStages) & 1));
      if (lane == 0) detail::mbar_arrive(&empty[i % kStages]);
    }
    return;
  }

  // Keys each of this thread's two rows sees; padding rows see key 0 only (a finite max from the
  // first tile on).
  const auto row_of = [&](int h) { return 64 * c + 16 * warp + g + 8 * h; };  // tile row of row h
  int nk[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = row_of(h);
    nk[h] = row < tr.rows ? max(tr.first_keys + row / G, 1) : 1;
  }
  float o[D / 2], sc[64], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, corr[2];
  uint32_t pa[kKeys / 16][4];  // P of the previous tile, the A operand of its P V
#pragma unroll
  for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
  const auto k_stage = [&](int it) { return kv_s + (it % kStages) * S::kStageBytes; };
  const auto parity = [&](int it) { return static_cast<uint32_t>((it / kStages) & 1); };

  // S = Q K^T of tile `it`, issued (not waited for): head_dim in k steps of 16, a step's operands
  // 32 bytes further into their SW128 rows (the hardware applies the swizzle to the address).
  const auto issue_scores = [&](int it) {
    const unsigned char* ks = k_stage(it);
    detail::mbar_wait(&full_k[it % kStages], parity(it));
    detail::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const int col = (kk / 4) * kRows * kRowBytes + (kk % 4) * 32;
      const uint64_t da = detail::sw128_desc(q_s + 64 * c * kRowBytes + col, 16, 1024);
      const uint64_t db =
          detail::sw128_desc(ks + (kk / 4) * kKeys * kRowBytes + (kk % 4) * 32, 16, 1024);
      detail::wgmma_m64n128_ss(sc, da, db, kk > 0 ? 1 : 0);
    }
    detail::wgmma_commit();
  };
  // O += P V of tile `it`, issued: V is the B operand read N-major (rows of keys, head_dim
  // contiguous); a k step's 16 keys start 16 rows further, its two 64-column blocks kKeys rows
  // apart. V rows past the sequence's last key hold other data or none (P is 0 there, but 0 x NaN
  // is not): the last tile's are zeroed first (both consumers write the same zeros).
  const auto issue_values = [&](int it) {
    unsigned char* vs = k_stage(it) + S::kTileBytes;
    detail::mbar_wait(&full_v[it % kStages], parity(it));
    const int first = tr.max_keys - key_tile(it) * kKeys;
    if (first < kKeys) {
      for (int i = tid; i < (kKeys - first) * 8 * kH; i += 128) {
        const int h = i / ((kKeys - first) * 8), rest = i % ((kKeys - first) * 8);
        *reinterpret_cast<uint4*>(vs + h * kKeys * kRowBytes + (first + rest / 8) * kRowBytes +
                                  (rest % 8) * 16) = make_uint4(0, 0, 0, 0);
      }
      detail::fence_proxy_async();
      detail::named_barrier(1 + c, 128);
    }
    detail::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      const uint64_t db = detail::sw128_desc(vs + kk * 16 * kRowBytes, kKeys * kRowBytes, 1024);
      if constexpr (D == 128)
        detail::wgmma_m64n128_rs(o, pa[kk], db);
      else
        detail::wgmma_m64n64_rs(o, pa[kk], db);
    }
    detail::wgmma_commit();
  };
  // Tile `it`'s scores (complete) to probabilities: the causal mask where some row's last key
  // falls inside the tile, then the online softmax per row (a row's max over the 4 lanes of its
  // quad). Score register 4j + e holds row g + 8 (e / 2), key 8j + 2t + e % 2 of the tile. The
  // correction of the rows' running output is left in corr: O may still be accumulating.
  const auto softmax = [&](int it) {
    const int key0 = key_tile(it) * kKeys;
    if (key0 + kKeys > tr.first_keys) {
#pragma unroll
      for (int i = 0; i < 64; ++i)
        if (key0 + 8 * (i / 4) + 2 * t + (i % 2) >= nk[(i % 4) / 2]) sc[i] = -INFINITY;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = m[h];
#pragma unroll
      for (int j = 0; j < 16; ++j) mx = fmaxf(mx, fmaxf(sc[4 * j + 2 * h], sc[4 * j + 2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      corr[h] = fast_exp2(m[h] - mx);
      m[h] = mx;
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 16; ++j) {
        sc[4 * j + 2 * h] = fast_exp2(sc[4 * j + 2 * h] - mx);
        sc[4 * j + 2 * h + 1] = fast_exp2(sc[4 * j + 2 * h + 1] - mx);
        sum += sc[4 * j + 2 * h] + sc[4 * j + 2 * h + 1];
      }
      l[h] = __fmaf_rn(l[h], corr[h], sum);
    }
  };
  // With O complete: its correction, and P (keys 16kk..16kk+15 = score n-tiles 2kk, 2kk + 1) as
  // the A fragments of the next P V.
  const auto rescale_and_pack = [&] {
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      o[4 * j] *= corr[0], o[4 * j + 1] *= corr[0];
      o[4 * j + 2] *= corr[1], o[4 * j + 3] *= corr[1];
    }
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk) {
      pa[kk][0] = detail::pack_bf16(sc[8 * kk + 0], sc[8 * kk + 1]);
      pa[kk][1] = detail::pack_bf16(sc[8 * kk + 2], sc[8 * kk + 3]);
      pa[kk][2] = detail::pack_bf16(sc[8 * kk + 4], sc[8 * kk + 5]);
      pa[kk][3] = detail::pack_bf16(sc[8 * kk + 6], sc[8 * kk + 7]);
    }
  };
  const auto release = [&](int it) {  // this warp is done with the tile's stage
    if (lane == 0) detail::mbar_arrive(&empty[it % kStages]);
  };

  // The fixed segments' end of segment `seg` (after its last P V completed): kFold, each row with
  // keys in it folds the segment into its running state (the first segment is the running state),
  // then keeps that in f32 scratch for the next segment or, at its last segment, writes o / l;
  // kSplit, the rows' states as they are, for the combine kernel. Then the next segment starts
  // from an empty state. (The four lanes of a row hold the same max and sum and write the same
  // values to its scratch.)
  // Row h's softmax sum: the sum of its quad's four lanes.
  const auto row_sum = [&](int h) {
    float sum = l[h];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    return sum;
  };
  const auto finish_segment = [&](int seg) {
    const int seg_begin = seg * kFixedSegmentKeys, seg_end = seg_begin + kFixedSegmentKeys;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float l_seg = row_sum(h);
      const int row = row_of(h);
      if (row >= tr.rows) continue;
      if constexpr (V == Variant::kFold) {
        if (nk[h] <= seg_begin) continue;
        const int64_t at = row_offset(row);
        float* run = f.fold_o + at + 2 * t;
        auto* ml = reinterpret_cast<float2*>(f.fold_ml + 2 * (at / D));
        float m_run = m[h], l_run = l_seg;
        if (seg > 0) {
          const float2 prev = *ml;
          m_run = prev.x, l_run = prev.y;
          const detail::FoldWeights w = detail::fold_weights(m_run, l_run, m[h], l_seg);
#pragma unroll
          for (int j = 0; j < D / 8; ++j) {
            const float2 r = *reinterpret_cast<const float2*>(run + 8 * j);
            o[4 * j + 2 * h] = detail::fold_value(r.x, o[4 * j + 2 * h], w);
            o[4 * j + 2 * h + 1] = detail::fold_value(r.y, o[4 * j + 2 * h + 1], w);
          }
        }
        if (nk[h] > seg_end) {
#pragma unroll
          for (int j = 0; j < D / 8; ++j)
            *reinterpret_cast<float2*>(run + 8 * j) =
                make_float2(o[4 * j + 2 * h], o[4 * j + 2 * h + 1]);
          *ml = make_float2(m_run, l_run);
        } else {
          const float inv = 1.0f / l_run;
#pragma unroll
          for (int j = 0; j < D / 8; ++j) {
            const int64_t out_at = at + 8 * j + 2 * t;
            detail::store(p.out, p.out_bf16, out_at, o[4 * j + 2 * h] * inv);
            detail::store(p.out, p.out_bf16, out_at + 1, o[4 * j + 2 * h + 1] * inv);
          }
        }
      } else {
        const int64_t at =
            (static_cast<int64_t>(ref.seq) * p.num_q_heads + kvh * G + row % G) * f.max_segments +
            seg;
        float* dst = f.part_o + at * D + 2 * t;
#pragma unroll
        for (int j = 0; j < D / 8; ++j)
          *reinterpret_cast<float2*>(dst + 8 * j) =
              make_float2(o[4 * j + 2 * h], o[4 * j + 2 * h + 1]);
        if (t == 0) *reinterpret_cast<float2*>(f.part_ml + 2 * at) = make_float2(m[h], l_seg);
      }
    }
#pragma unroll
    for (int i = 0; i < D / 2; ++i) o[i] = 0.0f;
    m[0] = m[1] = -INFINITY, l[0] = l[1] = 0.0f;
  };
  const auto segment_of = [&](int i) { return seg0 + (i / kSegTiles) * zstep; };

  // Tile it's scores are computed while tile it - 1's P V runs, and its softmax overlaps that
  // P V on the tensor cores (wgmma groups complete in order: waiting for all but the newest
  // group waits for the scores). Where tile it - 1 closes a fixed segment, its P V completes
  // before tile it's softmax, which starts the next segment's state.
  issue_scores(0);
  detail::wgmma_wait<0>();
  detail::fence_regs(sc);
  softmax(0);
  rescale_and_pack();
  for (int it = 1; it < count; ++it) {
    issue_scores(it);
    issue_values(it - 1);
    if (kFixed && segment_ends(it - 1)) {
      detail::wgmma_wait<0>();
      detail::fence_regs(sc);
      detail::fence_regs(o);
      release(it - 1);
      finish_segment(segment_of(it - 1));
      softmax(it);
      rescale_and_pack();
      continue;
    }
    detail::wgmma_wait<1>();
    detail::fence_regs(sc);
    softmax(it);
    detail::wgmma_wait<0>();
    detail::fence_regs(o);
    release(it - 1);
    rescale_and_pack();
  }
  issue_values(count - 1);
  detail::wgmma_wait<0>();
  detail::fence_regs(o);
  release(count - 1);
  if constexpr (kFixed) {
    finish_segment(segment_of(count - 1));
  } else {
    // o / l. Output register 4j + e holds row g + 8 (e / 2), column 8j + 2t + e % 2.
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float sum = row_sum(h);
      const int row = row_of(h);
      if (row >= tr.rows) continue;
      if constexpr (kRing) {
        const int keys = tr.first_keys + row / G, hq = kvh * G + row % G;
        const int pos = keys + rr.band - 1;  // the row's position: it sees keys [0, pos + 1 - band)
        const bool empty = keys <= 0;
        const int64_t at =
            (static_cast<int64_t>(rr.ring_slots[ref.seq]) * rr.window + pos % rr.window) *
                p.num_q_heads +
            hq;
        const float* qp = rr.q_pre + row_offset(row);
        const float inv = empty ? 0.0f : 1.0f / sum;
#pragma unroll
        for (int j = 0; j < D / 8; ++j) {
          const int col = 8 * j + 2 * t;
          detail::store(rr.ring.o, rr.bf16, at * D + col, o[4 * j + 2 * h] * inv);
          detail::store(rr.ring.o, rr.bf16, at * D + col + 1, o[4 * j + 2 * h + 1] * inv);
          detail::store(rr.ring.q, rr.bf16, at * D + col, qp[col]);
          detail::store(rr.ring.q, rr.bf16, at * D + col + 1, qp[col + 1]);
        }
        if (t == 0) rr.ring.lse[at] = empty ? -INFINITY : (m[h] + log2f(sum)) * kLn2;
        continue;
      }
      const float inv = 1.0f / sum;
      const int64_t out_off = row_offset(row);
#pragma unroll
      for (int j = 0; j < D / 8; ++j) {
        const int64_t at = out_off + 8 * j + 2 * t;
        detail::store(p.out, p.out_bf16, at, o[4 * j + 2 * h] * inv);
        detail::store(p.out, p.out_bf16, at + 1, o[4 * j + 2 * h + 1] * inv);
      }
    }
  }
}

// The cache as a 2-D tensor of rows (block, kv head, slot) x head_dim bf16; boxes of 64 columns x
// box_rows rows, written to shared memory with the 128-byte swizzle.
bool make_cache_map(CUtensorMap* map, const void* cache, const PagedKvLayout& L, int box_rows) {
  // Rows: the pool's when the layout knows its block count, else as many as a coordinate reaches.
  const int64_t rows =
      L.num_blocks > 0 ? L.num_blocks * L.num_kv_heads * L.block_size : int64_t{0x7fffffff};
  return detail::make_sw128_map(map, cache, rows, L.head_dim, box_rows);
}

int block_shift_of(int64_t block_size) {
  int shift = 0;
  while ((int64_t{1} << shift) < block_size) ++shift;
  return shift;
}

// `rows`: an upper bound of the (query) rows of any one sequence's tiles, summed over sequences
// (kSplit: one CTA per sequence and segment slot instead).
template <int D, Variant V>
int launch(const PagedAttentionCudaParams& p, const RingRows& rr, int64_t rows,
           const detail::FixedArgs& f, cudaStream_t st) {
  using S = Shape<D>;
  const int G = static_cast<int>(p.num_q_heads / p.layout.num_kv_heads);
  const int mq = kRows / G;
  const int box_rows = static_cast<int>(std::min<int64_t>(p.layout.block_size, kKeys));
  CUtensorMap tk{}, tv{};
  if (!make_cache_map(&tk, p.k_cache, p.layout, box_rows) ||
      !make_cache_map(&tv, p.v_cache, p.layout, box_rows))
    return static_cast<int>(cudaErrorInvalidValue);
  static const cudaError_t opt_in =
      cudaFuncSetAttribute(wgmma_prefill_kernel<D, V>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                           static_cast<int>(S::kSmem));
  if (opt_in != cudaSuccess) return static_cast<int>(opt_in);
  dim3 grid;
  if constexpr (V == Variant::kSplit) {
    grid = dim3(static_cast<unsigned>(p.num_seqs), static_cast<unsigned>(p.layout.num_kv_heads),
                static_cast<unsigned>(detail::fixed_segment_slots(p, f)));
  } else {
    // Upper bound of the tiles: every sequence may end with a partial one.
    const int64_t tiles = (rows + mq - 1) / mq + p.num_seqs;
    grid = dim3(static_cast<unsigned>(tiles), static_cast<unsigned>(p.layout.num_kv_heads));
  }
  wgmma_prefill_kernel<D, V><<<grid, kThreads, S::kSmem, st>>>(
      p, tk, tv, mq, block_shift_of(p.layout.block_size), box_rows, rr, f);
  return detail::last_error();
}

template <int D>
int launch_fixed(const PagedAttentionCudaParams& p, int64_t max_query_len,
                 const detail::FixedArgs& f, cudaStream_t st) {
  const RingRows none{};
  if (max_query_len != 1) {  // sequences with more than one query (0: not known)
    const int rc = launch<D, Variant::kFold>(p, none, p.num_tokens, f, st);
    if (rc != 0) return rc;
  }
  return launch<D, Variant::kSplit>(p, none, 0, f, st);
}

}  // namespace

bool prefill_wgmma_supported(int64_t head_dim, int64_t group, int64_t block_size) {
  return detail::hopper_tma_available() && (head_dim == 64 || head_dim == 128) && group >= 1 &&
         group <= 8 && block_size >= 8 && (block_size & (block_size - 1)) == 0;
}

int paged_prefill_wgmma(const PagedAttentionCudaParams& p, Stream stream) {
  if (p.num_tokens == 0) return 0;
  const int64_t G = p.num_q_heads / p.layout.num_kv_heads;
  if (!prefill_wgmma_supported(p.layout.head_dim, G, p.layout.block_size))
    return static_cast<int>(cudaErrorInvalidValue);
  const auto st = detail::as_stream(stream);
  const RingRows none{};
  return p.layout.head_dim == 64 ? launch<64, Variant::kPlain>(p, none, p.num_tokens, {}, st)
                                 : launch<128, Variant::kPlain>(p, none, p.num_tokens, {}, st);
}

bool mac_prefill_rows_wgmma_supported(const MacPrefillRowsParams& m) {
  return m.cfg.sink == 0 && m.cfg.band >= 1 &&
         prefill_wgmma_supported(m.layout.head_dim, m.num_q_heads / m.layout.num_kv_heads,
                                 m.layout.block_size);
}

int mac_prefill_rows_wgmma(const MacPrefillRowsParams& m, Stream stream) {
  if (m.num_tokens == 0 || m.num_seqs == 0) return 0;
  if (!mac_prefill_rows_wgmma_supported(m)) return static_cast<int>(cudaErrorInvalidValue);
  PagedAttentionCudaParams p{};
  p.q = m.q_post;
  p.k_cache = m.k_cache;
  p.v_cache = m.v_cache;
  p.query_start = m.query_start;
  p.context_lens = m.context_lens;
  p.block_tables = m.block_tables;
  p.num_seqs = m.num_seqs;
  p.num_tokens = m.num_tokens;
  p.max_blocks_per_seq = m.max_blocks_per_seq;
  p.num_q_heads = m.num_q_heads;
  p.scale = m.scale;
  p.layout = m.layout;
  const RingRows rr{m.q_pre,
                    m.ring_slots,
                    m.rows_from,
                    m.modes,
                    m.ring,
                    static_cast<int>(m.cfg.window),
                    static_cast<int>(m.cfg.band),
                    m.cfg.ring_bf16};
  // A sequence owns at most M rows, and no more than its chunk's tokens.
  const int64_t rows = std::min(m.num_tokens, m.num_seqs * m.cfg.window);
  const auto st = detail::as_stream(stream);
  return m.layout.head_dim == 64 ? launch<64, Variant::kRing>(p, rr, rows, {}, st)
                                 : launch<128, Variant::kRing>(p, rr, rows, {}, st);
}

namespace detail {

int fixed_segments_wgmma(const PagedAttentionCudaParams& p, int64_t max_query_len,
                         const FixedArgs& f, cudaStream_t st) {
  return p.layout.head_dim == 64 ? launch_fixed<64>(p, max_query_len, f, st)
                                 : launch_fixed<128>(p, max_query_len, f, st);
}

}  // namespace detail

}  // namespace macserve::kernels::cuda
