// The inner loop of the quantized linear layers (quant_gemm.cc): activations quantized to 8 bits
// with one scale per 4 elements, and a register tile of integer dot products of them with GGUF
// weight blocks (Q8_0, Q4_0, Q4_1), scaled per block and lane in float.
//
// Fixed arithmetic, whatever the tile shape, the ISA or the row's place in the batch (what keeps
// the kernels batch-invariant). For output (x row r, weight row c), per 32-element block b:
//   1. x row r, each group g of 4 elements (8 per block): d_g = max|x| / 127,
//      q = round_half_even(x * (1 / d_g)) (q = 0 where d_g = 0); s_b = fma(d_g, sum_g(q), s_b) over
//      the block's 8 groups in order from 0. A row is quantized the same way whatever m is.
//   2. Eight exact int32 lanes: lane l = sum over e in [4l, 4l + 4) of w_e * q_e, with w_e the
//      block's integer: Q8_0 q, Q4_0 nibble - 8, Q4_1 nibble. |lane| <= 4 * 128 * 127, so AVX2's
//      maddubs + madd (no int16 saturation with these ranges, see DotAvx2), VNNI's dpbusd and the
//      scalar loop all give the same integers, and the float conversion is exact.
//   3. acc[l] = fma(float(lane l), fl(d_x[group l of b] * d_w[b]), acc[l]) over b in order (acc
//      starts at 0); Q4_1 also mterm = fma(s_b, m_w[b], mterm).
//   4. y = hsum(acc) (gemm_tile.h's tree: (l, l + 4), then (0, 2) + (1, 3)) [+ mterm] [+ bias].
// Why a scale per 4 elements rather than llama.cpp's one per 32: an int32 lane covers exactly one
// group, so the per-lane scale costs the same vector multiply as a broadcast one, and SmolLM2's
// activation outliers then spoil 4 elements each instead of 32 (logit error vs the f32 path: see
// tests/models/smollm2_test.cc).
// Where time goes (decode, m = 1): per weight block one 16- or 32-byte load, the nibble unpack
// (shift, blend, and), one dpbusd (or maddubs + madd), one convert, one multiply and one FMA; the
// weights are read at 4.5-8.5 bits each and the tile keeps up with streaming them from memory.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "gemm_tile.h"
#include "macserve/kernels/quant.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define MACSERVE_QDOT_AVX2 1
#include <immintrin.h>
#endif

namespace macserve::kernels::cpu::detail {

inline float fp16_to_f32(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
#ifdef MACSERVE_QDOT_AVX2
  return _cvtsh_ss(h);
#else
  // Exact for normals, subnormals, inf and NaN.
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {  // subnormal: normalise
    exp = 113;
    while ((mant & 0x400u) == 0) mant <<= 1, --exp;
    bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
#endif
}

// Rows of x quantized by step 1. Row i: q + i * k, d + i * k / 4, s + i * k / 32.
struct QuantizedX {
  const int8_t* q;  // [m, k] int8
  const float* d;   // [m, k / 4] scale of each group of 4 elements
  const float* s;   // [m, k / 32] sum of d * q over each block (Q4_1's offset term)
  int64_t k;        // multiple of kQuantBlock
};

constexpr int64_t kQuantGroup = 4;  // elements per activation scale: one int32 lane of a block

// Step 1 for one row of k floats (a multiple of 32).
inline void quantize_row(const float* x, int64_t k, int8_t* q, float* d, float* s) {
  for (int64_t b = 0; b < k / kQuantBlock; ++b) {
    const float* xb = x + b * kQuantBlock;
    int8_t* qb = q + b * kQuantBlock;
    float* db = d + b * (kQuantBlock / kQuantGroup);
    int32_t sums[kQuantBlock / kQuantGroup];
#ifdef MACSERVE_QDOT_AVX2
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256i iv[4];
    for (std::ptrdiff_t c = 0; c < 4; ++c) {  // 8 elements = 2 groups at a time
      const __m256 v = _mm256_loadu_ps(xb + 8 * c);
      __m256 mx = _mm256_andnot_ps(sign, v);
      mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0xb1));
      mx = _mm256_max_ps(mx, _mm256_shuffle_ps(mx, mx, 0x4e));  // every lane: its group's max
      const __m256 dv = _mm256_div_ps(mx, _mm256_set1_ps(127.0f));
      const __m256 iv_scale = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0f), dv),
                                            _mm256_cmp_ps(dv, _mm256_setzero_ps(), _CMP_NEQ_OQ));
      // round half to even: the default MXCSR mode, as std::nearbyint's
      iv[c] = _mm256_cvtps_epi32(_mm256_mul_ps(v, iv_scale));
      db[2 * c] = _mm256_cvtss_f32(dv);
      db[2 * c + 1] = _mm_cvtss_f32(_mm256_extractf128_ps(dv, 1));
      // Group sums: pairs, then quads (lanes 0 and 4 hold the two groups' sums).
      __m256i t = _mm256_add_epi32(iv[c], _mm256_shuffle_epi32(iv[c], 0xb1));
      t = _mm256_add_epi32(t, _mm256_shuffle_epi32(t, 0x4e));
      sums[2 * c] = _mm256_cvtsi256_si32(t);
      sums[2 * c + 1] = _mm_cvtsi128_si32(_mm256_extracti128_si256(t, 1));
    }
    // packs interleave the 128-bit halves; the permute puts the 32 bytes back in element order.
    const __m256i p =
        _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb),
                        _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
#else
    for (int64_t g = 0; g < kQuantBlock / kQuantGroup; ++g) {
      float amax = 0.0f;
      for (int64_t e = 0; e < kQuantGroup; ++e)
        amax = std::max(amax, std::abs(xb[g * kQuantGroup + e]));
      db[g] = amax / 127.0f;
      const float id = db[g] != 0.0f ? 1.0f / db[g] : 0.0f;
      sums[g] = 0;
      for (int64_t e = 0; e < kQuantGroup; ++e) {
        const int v = static_cast<int>(std::nearbyint(xb[g * kQuantGroup + e] * id));
        qb[g * kQuantGroup + e] = static_cast<int8_t>(v);
        sums[g] += v;
      }
    }
#endif
    float sb = 0.0f;
    for (int64_t g = 0; g < kQuantBlock / kQuantGroup; ++g)
      sb = std::fma(db[g], static_cast<float>(sums[g]), sb);
    s[b] = sb;
  }
}

// One tile: y[i * ldy + j] for i < mt, j < nt, x rows from x, weight rows from w (stride
// w_stride bytes); bias indexed by j.
struct QuantTile {
  const uint8_t* w;  // [nt, w_stride] blocks of the tile's first weight row on
  int64_t w_stride;
  int64_t nt;
  QuantizedX x;  // the tile's first x row
  int64_t mt;
  const float* bias;  // [nt] or nullptr
  float* y;
  int64_t ldy;
};

// Step 1's output for the MT x rows of a SIMD tile: quants, group scales and block sums of row i
// (rows past mt repeat row 0, as the tiles compute but do not store them). nb: blocks per row.
template <int MT>
struct TileXRows {
  const int8_t* q[MT];
  const float* d[MT];
  const float* s[MT];
  TileXRows(const QuantTile& t, int64_t nb) {
    for (int i = 0; i < MT; ++i) {
      const int64_t r = i < t.mt ? i : 0;
      q[i] = t.x.q + r * t.x.k;
      d[i] = t.x.d + r * nb * 8;
      s[i] = t.x.s + r * nb;
    }
  }
};

// Scalar twin of step 2-4 (the reference the SIMD tiles must match bit for bit; the kernel where
// the library is built without AVX2).
template <QuantFormat F>
void quant_tile_scalar(const QuantTile& t) {
  constexpr int64_t kBytes = quant_block_bytes(F);
  const int64_t nb = t.x.k / kQuantBlock;
  for (int64_t i = 0; i < t.mt; ++i)
    for (int64_t j = 0; j < t.nt; ++j) {
      const int8_t* xq = t.x.q + i * t.x.k;
      float acc[8] = {}, mterm = 0.0f;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = t.w + j * t.w_stride + b * kBytes;
        const int8_t* qb = xq + b * kQuantBlock;
        int32_t lane[8] = {};
        for (int e = 0; e < kQuantBlock; ++e) {
          int32_t w;
          if constexpr (F == QuantFormat::kQ8_0) {
            w = static_cast<int8_t>(blk[2 + e]);
          } else {
            const uint8_t byte = blk[(F == QuantFormat::kQ4_1 ? 4 : 2) + e % 16];
            w = e < 16 ? byte & 0x0f : byte >> 4;
            if constexpr (F == QuantFormat::kQ4_0) w -= 8;
          }
          lane[e / 4] += w * qb[e];
        }
        const float dw = fp16_to_f32(blk);
        const float* dx = t.x.d + (i * nb + b) * 8;
        for (int l = 0; l < 8; ++l)
          acc[l] = std::fma(static_cast<float>(lane[l]), dx[l] * dw, acc[l]);
        if constexpr (F == QuantFormat::kQ4_1)
          mterm = std::fma(t.x.s[i * nb + b], fp16_to_f32(blk + 2), mterm);
      }
      const float b0 = acc[0] + acc[4], b1 = acc[1] + acc[5], b2 = acc[2] + acc[6],
                  b3 = acc[3] + acc[7];
      const float c0 = b0 + b2, c1 = b1 + b3;
      float s = c0 + c1;
      if constexpr (F == QuantFormat::kQ4_1) s += mterm;
      if (t.bias != nullptr) s += t.bias[j];
      t.y[i * t.ldy + j] = s;
    }
}

#ifdef MACSERVE_QDOT_AVX2
// Eight int32 lanes, lane l = sum of u[e] * s[e] over bytes e in [4l, 4l + 4) (u unsigned, s
// signed). AVX2 pairs bytes into int16 first: exact here because every caller keeps
// |u| <= 128 and |s| <= 127 (2 * 128 * 127 < 32767).
struct DotAvx2 {
  static __m256i dot(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
  }
};
struct DotAvxVnni {
  [[gnu::target("avxvnni")]] static __m256i dot(__m256i u, __m256i s) {
    return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
  }
};
struct DotAvx512Vnni {
  [[gnu::target("avx512vnni,avx512vl")]] static __m256i dot(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
  }
};

// Steps 2-4 for an MT x NT tile (mt <= MT, nt <= NT rows are real; the others repeat row 0 and
// are not stored). Inlined into one target-specific entry point per Dot (quant_gemm.cc).
template <QuantFormat F, class Dot, int MT, int NT>
inline void quant_tile(const QuantTile& t) {
  static_assert(NT <= 4, "the Q4_1 offset terms of a tile's rows share one 4-lane vector");
  constexpr int64_t kBytes = quant_block_bytes(F);
  constexpr int kNib = F == QuantFormat::kQ4_1 ? 4 : 2;  // offset of the quants in a block
  const int64_t nb = t.x.k / kQuantBlock;
  const uint8_t* wr[NT];
  for (int j = 0; j < NT; ++j) wr[j] = t.w + (j < t.nt ? j : 0) * t.w_stride;
  const TileXRows<MT> x(t, nb);
  __m256 acc[MT][NT];
  __m256 macc[MT];  // Q4_1: lane 2j + 1 sums s_x * m_w of weight row j
  for (int i = 0; i < MT; ++i) {
    macc[i] = _mm256_setzero_ps();
    for (int j = 0; j < NT; ++j) acc[i][j] = _mm256_setzero_ps();
  }
  const __m256i low4 = _mm256_set1_epi8(0x0f);
  // Where row j's scale sits in the header vector below.
  constexpr int kScaleLane = F == QuantFormat::kQ4_1 ? 2 : 1;
  // One tile ahead: the rows the next tile (the next call, or the other thread's first) reads.
  const int64_t ahead = NT * t.w_stride;
  for (int64_t b = 0; b < nb; ++b) {
    __m256i wv[NT];     // Q8_0: |q|; Q4_0: nibble - 8; Q4_1: nibble
    __m256i wsign[NT];  // Q8_0: q, for the sign of the products
    // The NT block headers as floats: Q4_1 [d0, m0, d1, m1, ...], others [d0, d1, ...].
    __m256 hdr;
    if constexpr (F == QuantFormat::kQ4_1) {
      int32_t h[4] = {};
      for (int j = 0; j < NT; ++j) std::memcpy(&h[j], wr[j] + b * kBytes, 4);
      hdr = _mm256_cvtph_ps(_mm_setr_epi32(h[0], h[1], h[2], h[3]));
    } else {
      int16_t h[4] = {};
      for (int j = 0; j < NT; ++j) std::memcpy(&h[j], wr[j] + b * kBytes, 2);
      hdr =
          _mm256_castps128_ps256(_mm_cvtph_ps(_mm_setr_epi16(h[0], h[1], h[2], h[3], 0, 0, 0, 0)));
    }
    __m256 dw[NT];  // d_w of row j in every lane
    for (int j = 0; j < NT; ++j) {
      dw[j] = _mm256_permutevar8x32_ps(hdr, _mm256_set1_epi32(kScaleLane * j));
      const uint8_t* blk = wr[j] + b * kBytes;
      _mm_prefetch(reinterpret_cast<const char*>(blk + ahead), _MM_HINT_T0);
      if constexpr (F == QuantFormat::kQ8_0) {
        wsign[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
        wv[j] = _mm256_abs_epi8(wsign[j]);
      } else {
        // Bytes 0-15 of the register: low nibbles (elements 0-15); 16-31: high (16-31).
        const __m256i raw = _mm256_broadcastsi128_si256(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + kNib)));
        wv[j] = _mm256_and_si256(_mm256_blend_epi32(raw, _mm256_srli_epi16(raw, 4), 0xf0), low4);
        if constexpr (F == QuantFormat::kQ4_0) wv[j] = _mm256_sub_epi8(wv[j], _mm256_set1_epi8(8));
      }
    }
    for (int i = 0; i < MT; ++i) {
      const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q[i] + b * 32));
      const __m256 dx = _mm256_loadu_ps(x.d[i] + b * 8);  // the block's 8 group scales
      __m256i xa = xv;
      if constexpr (F == QuantFormat::kQ4_0) xa = _mm256_abs_epi8(xv);
      for (int j = 0; j < NT; ++j) {
        __m256i lanes;
        if constexpr (F == QuantFormat::kQ8_0)
          lanes = Dot::dot(wv[j], _mm256_sign_epi8(xv, wsign[j]));
        else if constexpr (F == QuantFormat::kQ4_0)
          lanes = Dot::dot(xa, _mm256_sign_epi8(wv[j], xv));
        else
          lanes = Dot::dot(wv[j], xv);
        acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_mul_ps(dx, dw[j]), acc[i][j]);
      }
      if constexpr (F == QuantFormat::kQ4_1)
        macc[i] = _mm256_fmadd_ps(_mm256_set1_ps(x.s[i][b]), hdr, macc[i]);
    }
  }
  for (int64_t i = 0; i < t.mt; ++i) {
    alignas(32) float mterm[8];
    _mm256_store_ps(mterm, macc[i]);
    for (int64_t j = 0; j < t.nt; ++j) {
      float s = hsum(acc[i][j]);
      if constexpr (F == QuantFormat::kQ4_1) s += mterm[2 * j + 1];
      if (t.bias != nullptr) s += t.bias[j];
      t.y[i * t.ldy + j] = s;
    }
  }
}

// The AVX-512 twin of quant_tile for NT = 2 (prefill): one zmm holds the same block of both weight
// rows (row 0 in the low 256 bits, row 1 in the high), so each instruction does the work of two
// ymm ones; every 256-bit half runs exactly quant_tile's per-lane arithmetic, so the bits are the
// same. AVX-512 has no sign_epi8: Q8_0 and Q4_0 negate with a mask instead, which differs from
// sign_epi8 only where the other factor is 0 (|w| = 0 or |x| = 0), so every product is the same.
// GCC 12 flags the "undefined" upper halves its own AVX-512 intrinsics create (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
template <QuantFormat F, int MT>
[[gnu::target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]] void quant_tile_zmm(
    const QuantTile& t) {
  constexpr int64_t kBytes = quant_block_bytes(F);
  constexpr int kNib = F == QuantFormat::kQ4_1 ? 4 : 2;
  const int64_t nb = t.x.k / kQuantBlock;
  const uint8_t* w0 = t.w;
  const uint8_t* w1 = t.w + (t.nt > 1 ? t.w_stride : 0);
  const TileXRows<MT> x(t, nb);
  __m512 acc[MT];
  __m128 macc[MT];  // Q4_1: lane 2j + 1 sums s_x * m_w of weight row j
  for (int i = 0; i < MT; ++i) {
    acc[i] = _mm512_setzero_ps();
    macc[i] = _mm_setzero_ps();
  }
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  const __m512i zero = _mm512_setzero_si512();
  // Lanes 0-7: row 0's scale, 8-15: row 1's, from the header vector below.
  const __m512i scale_idx = F == QuantFormat::kQ4_1
                                ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 2, 2, 2, 2)
                                : _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
  const int64_t ahead = 2 * t.w_stride;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* b0 = w0 + b * kBytes;
    const uint8_t* b1 = w1 + b * kBytes;
    _mm_prefetch(reinterpret_cast<const char*>(b0 + ahead), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b1 + ahead), _MM_HINT_T0);
    __m128 hdr;  // Q4_1 [d0, m0, d1, m1], others [d0, d1, 0, 0]
    if constexpr (F == QuantFormat::kQ4_1) {
      int32_t h0, h1;
      std::memcpy(&h0, b0, 4);
      std::memcpy(&h1, b1, 4);
      hdr = _mm_cvtph_ps(_mm_setr_epi32(h0, h1, 0, 0));
    } else {
      int16_t h0, h1;
      std::memcpy(&h0, b0, 2);
      std::memcpy(&h1, b1, 2);
      hdr = _mm_cvtph_ps(_mm_setr_epi16(h0, h1, 0, 0, 0, 0, 0, 0));
    }
    const __m512 dw = _mm512_permutexvar_ps(scale_idx, _mm512_zextps128_ps512(hdr));
    __m512i wv, wsign;
    if constexpr (F == QuantFormat::kQ8_0) {
      wsign = _mm512_inserti64x4(
          _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2))),
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + 2)), 1);
      wv = _mm512_abs_epi8(wsign);
    } else {
      const __m512i raw = _mm512_inserti64x4(
          _mm512_zextsi256_si512(_mm256_broadcastsi128_si256(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + kNib)))),
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b1 + kNib))),
          1);
      wv = _mm512_and_si512(_mm512_mask_blend_epi32(0xf0f0, raw, _mm512_srli_epi16(raw, 4)), low4);
      if constexpr (F == QuantFormat::kQ4_0) wv = _mm512_sub_epi8(wv, _mm512_set1_epi8(8));
    }
    for (int i = 0; i < MT; ++i) {
      const __m512i xv = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q[i] + b * 32)));
      const __m512 dx = _mm512_broadcast_f32x8(_mm256_loadu_ps(x.d[i] + b * 8));
      __m512i lanes;
      if constexpr (F == QuantFormat::kQ8_0)
        lanes = _mm512_dpbusd_epi32(zero, wv,
                                    _mm512_mask_sub_epi8(xv, _mm512_movepi8_mask(wsign), zero, xv));
      else if constexpr (F == QuantFormat::kQ4_0)
        lanes = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(xv),
                                    _mm512_mask_sub_epi8(wv, _mm512_movepi8_mask(xv), zero, wv));
      else
        lanes = _mm512_dpbusd_epi32(zero, wv, xv);
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(lanes), _mm512_mul_ps(dx, dw), acc[i]);
      if constexpr (F == QuantFormat::kQ4_1)
        macc[i] = _mm_fmadd_ps(_mm_set1_ps(x.s[i][b]), hdr, macc[i]);
    }
  }
  for (int64_t i = 0; i < t.mt; ++i) {
    alignas(16) float mterm[4];
    _mm_store_ps(mterm, macc[i]);
    const __m256 halves[2] = {_mm512_castps512_ps256(acc[i]), _mm512_extractf32x8_ps(acc[i], 1)};
    for (int64_t j = 0; j < t.nt; ++j) {
      float s = hsum(halves[j]);
      if constexpr (F == QuantFormat::kQ4_1) s += mterm[2 * j + 1];
      if (t.bias != nullptr) s += t.bias[j];
      t.y[i * t.ldy + j] = s;
    }
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace macserve::kernels::cpu::detail
