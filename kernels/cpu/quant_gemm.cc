// Linear layers over GGUF block-quantized weights (Q8_0, Q4_0, Q4_1), kept in the file's format.
//
// Each call quantizes the rows of x to 8 bits (a scale per 4 elements) once, then runs the
// integer-dot register tiles of quant_dot.h over the weight blocks as they lie in the file (no
// dequantized copy). The arithmetic of an output element does not depend on m, the tile shape, the
// ISA picked at run time (AVX-512 VNNI, AVX-VNNI, AVX2) or the loop below that runs it, so the
// kernels are batch-invariant: a row's bits are the same alone, anywhere in a batch, at decode and
// at prefill.
//
// Where time goes: decode (m <= 3) streams the weights once, 4 rows per tile, reading 4.5-8.5 bits
// per weight and doing 32 multiply-adds per dpbusd (or maddubs + madd); prefill walks each thread's
// weight rows in panels that stay in L2 while blocks of quantized x rows pass over them.
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "macserve/kernels/quant.h"
#include "quant_dot.h"

#ifdef MACSERVE_QDOT_AVX2
#include <cpuid.h>
#endif

namespace macserve::kernels::cpu {
namespace {

using detail::fp16_to_f32;

// One block of 32 elements -> dst[0, 32). Q8_0: q * d; Q4_0: (q - 8) * d; Q4_1: fma(q, d, m).
template <QuantFormat F>
void dequant_block(const uint8_t* b, float* dst) {
  const float d = fp16_to_f32(b);
#ifdef MACSERVE_QDOT_AVX2
  const __m256 dv = _mm256_set1_ps(d);
  if constexpr (F == QuantFormat::kQ8_0) {
    for (std::ptrdiff_t c = 0; c < 4; ++c) {
      const __m128i q8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * c));
      _mm256_storeu_ps(dst + 8 * c,
                       _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q8)), dv));
    }
  } else {
    const __m128i raw =
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + (F == QuantFormat::kQ4_1 ? 4 : 2)));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(raw, mask);                     // elements 0..15
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(raw, 4), mask);  // elements 16..31
    const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
    for (std::ptrdiff_t c = 0; c < 4; ++c) {
      const __m256 q = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[c]));
      if constexpr (F == QuantFormat::kQ4_0) {
        _mm256_storeu_ps(dst + 8 * c, _mm256_mul_ps(_mm256_sub_ps(q, _mm256_set1_ps(8.0f)), dv));
      } else {
        _mm256_storeu_ps(dst + 8 * c, _mm256_fmadd_ps(q, dv, _mm256_set1_ps(fp16_to_f32(b + 2))));
      }
    }
  }
#else
  if constexpr (F == QuantFormat::kQ8_0) {
    for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
  } else {
    const uint8_t* qs = b + (F == QuantFormat::kQ4_1 ? 4 : 2);
    for (int j = 0; j < 16; ++j) {
      const auto lo = static_cast<float>(qs[j] & 0x0f), hi = static_cast<float>(qs[j] >> 4);
      if constexpr (F == QuantFormat::kQ4_0) {
        dst[j] = (lo - 8.0f) * d;
        dst[j + 16] = (hi - 8.0f) * d;
      } else {
        const float m = fp16_to_f32(b + 2);
        dst[j] = std::fma(lo, d, m);
        dst[j + 16] = std::fma(hi, d, m);
      }
    }
  }
#endif
}

template <QuantFormat F>
void dequant_row(const uint8_t* row, int64_t k, float* dst) {
  constexpr int64_t kBytes = quant_block_bytes(F);
  for (int64_t b = 0; b < k / kQuantBlock; ++b)
    dequant_block<F>(row + b * kBytes, dst + b * kQuantBlock);
}

// Tile shapes: decode (m <= kDecodeMaxM) takes kDecodeTileN weight rows and all m rows of x per
// tile, so each weight block is loaded once per step; prefill takes up to prefill_m x rows by
// kPrefillTileN weight rows: 4 with ymm registers (8 accumulators within AVX2's 16 registers), 8
// with AVX-512's 32 zmm (8 accumulators of two rows each), which unpacks each weight block once per
// 8 x rows.
constexpr int kDecodeTileN = 4;
constexpr int64_t kDecodeMaxM = 3;
constexpr int kPrefillTileN = 2;
constexpr int kMaxPrefillTileM = 8;

using TileFn = void (*)(const detail::QuantTile&);
struct TileSet {
  TileFn decode[kDecodeMaxM];        // [mt - 1]: mt x kDecodeTileN tiles
  int64_t prefill_m;                 // x rows per prefill tile
  TileFn prefill[kMaxPrefillTileM];  // [mt - 1] for mt <= prefill_m: mt x kPrefillTileN tiles
};

// One entry point per ISA and tile shape. flatten inlines the tile and its Dot into the
// target-specific function, so the VNNI instructions are only ever run where the CPU has them.
template <QuantFormat F>
struct ScalarTiles {
  template <int MT, int NT>
  static void run(const detail::QuantTile& t) {
    detail::quant_tile_scalar<F>(t);
  }
};
#ifdef MACSERVE_QDOT_AVX2
template <QuantFormat F>
struct Avx2Tiles {
  template <int MT, int NT>
  [[gnu::flatten]] static void run(const detail::QuantTile& t) {
    detail::quant_tile<F, detail::DotAvx2, MT, NT>(t);
  }
};
template <QuantFormat F>
struct AvxVnniTiles {
  template <int MT, int NT>
  [[gnu::target("avxvnni"), gnu::flatten]] static void run(const detail::QuantTile& t) {
    detail::quant_tile<F, detail::DotAvxVnni, MT, NT>(t);
  }
};
template <QuantFormat F>
struct Avx512VnniTiles {
  template <int MT, int NT>
  [[gnu::target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni"), gnu::flatten]] static void run(
      const detail::QuantTile& t) {
    if constexpr (NT == 2)
      detail::quant_tile_zmm<F, MT>(t);
    else
      detail::quant_tile<F, detail::DotAvx512Vnni, MT, NT>(t);
  }
};
#endif

template <class T, int... M>
constexpr TileSet make_tile_set(std::integer_sequence<int, M...> /*prefill_m*/) {
  return {{&T::template run<1, kDecodeTileN>, &T::template run<2, kDecodeTileN>,
           &T::template run<3, kDecodeTileN>},
          sizeof...(M),
          {&T::template run<M + 1, kPrefillTileN>...}};
}

template <QuantFormat F>
const TileSet& tile_set(QuantDotIsa isa) {
  static constexpr TileSet kScalar =
      make_tile_set<ScalarTiles<F>>(std::make_integer_sequence<int, 4>{});
#ifdef MACSERVE_QDOT_AVX2
  static constexpr TileSet kAvx2 =
      make_tile_set<Avx2Tiles<F>>(std::make_integer_sequence<int, 4>{});
  static constexpr TileSet kAvxVnni =
      make_tile_set<AvxVnniTiles<F>>(std::make_integer_sequence<int, 4>{});
  static constexpr TileSet kAvx512Vnni =
      make_tile_set<Avx512VnniTiles<F>>(std::make_integer_sequence<int, kMaxPrefillTileM>{});
#endif
  switch (isa) {
    case QuantDotIsa::kAuto:
    case QuantDotIsa::kScalar:
      return kScalar;
#ifdef MACSERVE_QDOT_AVX2
    case QuantDotIsa::kAvx2:
      return kAvx2;
    case QuantDotIsa::kAvxVnni:
      return kAvxVnni;
    case QuantDotIsa::kAvx512Vnni:
      return kAvx512Vnni;
#else
    case QuantDotIsa::kAvx2:
    case QuantDotIsa::kAvxVnni:
    case QuantDotIsa::kAvx512Vnni:
      return kScalar;
#endif
  }
  return kScalar;
}

#ifdef MACSERVE_QDOT_AVX2
constexpr bool kBuiltWithAvx2 = true;
bool cpu_has_avx_vnni() {  // CPUID.(EAX=7, ECX=1):EAX bit 4
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid_count(7, 1, &a, &b, &c, &d) != 0 && ((a >> 4) & 1u) != 0;
}
bool cpu_has_avx512_vnni() {  // the OS saving AVX-512 state included
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") != 0 && __builtin_cpu_supports("avx512bw") != 0 &&
         __builtin_cpu_supports("avx512dq") != 0 && __builtin_cpu_supports("avx512vl") != 0 &&
         __builtin_cpu_supports("avx512vnni") != 0;
}
#else
constexpr bool kBuiltWithAvx2 = false;
bool cpu_has_avx_vnni() { return false; }
bool cpu_has_avx512_vnni() { return false; }
#endif

// The ISA quant_linear runs for kAuto: env MACSERVE_QUANT_DOT_ISA (scalar, avx2, avxvnni,
// avx512vnni; for benchmarks, ignored where unsupported), else the best the CPU has.
QuantDotIsa default_isa() {
  static const QuantDotIsa kIsa = [] {
    if (const char* env = std::getenv("MACSERVE_QUANT_DOT_ISA"); env != nullptr) {
      const std::string_view v(env);
      const QuantDotIsa want = v == "scalar"       ? QuantDotIsa::kScalar
                               : v == "avx2"       ? QuantDotIsa::kAvx2
                               : v == "avxvnni"    ? QuantDotIsa::kAvxVnni
                               : v == "avx512vnni" ? QuantDotIsa::kAvx512Vnni
                                                   : QuantDotIsa::kAuto;
      if (want != QuantDotIsa::kAuto && cpu::quant_dot_isa_supported(want)) return want;
    }
    for (const QuantDotIsa i :
         {QuantDotIsa::kAvx512Vnni, QuantDotIsa::kAvxVnni, QuantDotIsa::kAvx2})
      if (cpu::quant_dot_isa_supported(i)) return i;
    return QuantDotIsa::kScalar;
  }();
  return kIsa;
}

// Runs the tiles over y. Every output element is one tile call over the whole k, so the decode and
// prefill loops give the same bits.
template <QuantFormat F>
void run_tiles(const QuantLinearParams& p, const detail::QuantizedX& x, const TileSet& ts) {
  const int64_t row_bytes = quant_row_bytes(F, p.k);
  const int64_t nb = p.k / kQuantBlock, ng = p.k / detail::kQuantGroup;
  const auto tile = [&](TileFn fn, int64_t n0, int64_t nt, int64_t i, int64_t mt) {
    fn({p.w + n0 * row_bytes,
        row_bytes,
        nt,
        {x.q + i * p.k, x.d + i * ng, x.s + i * nb, p.k},
        mt,
        p.bias != nullptr ? p.bias + n0 : nullptr,
        p.y + i * p.n + n0,
        p.n});
  };
  if (p.m <= kDecodeMaxM) {  // decode: one pass over the weights, 4 rows at a time
    const int64_t num_tiles = (p.n + kDecodeTileN - 1) / kDecodeTileN;
    const TileFn fn = ts.decode[p.m - 1];
#pragma omp parallel for schedule(static) if (p.n * p.k * p.m > 32768)
    for (int64_t t = 0; t < num_tiles; ++t) {
      const int64_t n0 = t * kDecodeTileN;
      tile(fn, n0, std::min<int64_t>(kDecodeTileN, p.n - n0), 0, p.m);
    }
    return;
  }
  // Prefill: each thread's weight rows in panels of ~kPanelBytes (L2), x in blocks of rows of
  // ~kXBlockBytes of int8 (L2) that pass over every tile of the panel.
  const int64_t num_tiles = (p.n + kPrefillTileN - 1) / kPrefillTileN;
  const int64_t mb =
      std::max<int64_t>(detail::kXBlockBytes / p.k / ts.prefill_m * ts.prefill_m, ts.prefill_m);
#pragma omp parallel if (p.n * p.k * p.m > 32768)
  {
    const int64_t threads = omp_get_num_threads();
    const int64_t id = omp_get_thread_num();
    const int64_t t_begin = num_tiles * id / threads;
    const int64_t t_end = num_tiles * (id + 1) / threads;
    const int64_t panel_tiles =
        std::max<int64_t>(detail::kPanelBytes / (kPrefillTileN * row_bytes), 1);
    for (int64_t p0 = t_begin; p0 < t_end; p0 += panel_tiles) {
      const int64_t p1 = std::min(p0 + panel_tiles, t_end);
      for (int64_t m0 = 0; m0 < p.m; m0 += mb) {
        const int64_t m1 = std::min(m0 + mb, p.m);
        for (int64_t t = p0; t < p1; ++t) {
          const int64_t n0 = t * kPrefillTileN;
          const int64_t nt = std::min<int64_t>(kPrefillTileN, p.n - n0);
          for (int64_t i = m0; i < m1; i += ts.prefill_m) {
            const int64_t mt = std::min<int64_t>(ts.prefill_m, m1 - i);
            tile(ts.prefill[mt - 1], n0, nt, i, mt);
          }
        }
      }
    }
  }
}

}  // namespace

void quant_linear(const QuantLinearParams& p) {
  if (p.m == 0 || p.n == 0) return;
  const QuantDotIsa isa =
      p.isa != QuantDotIsa::kAuto && quant_dot_isa_supported(p.isa) ? p.isa : default_isa();
  // x quantized once per call, in the calling thread's buffers (pointers taken here: the OpenMP
  // threads have thread_locals of their own).
  const int64_t nb = p.k / kQuantBlock, ng = p.k / detail::kQuantGroup;
  thread_local std::vector<int8_t> q_buf;
  thread_local std::vector<float> d_buf, s_buf;
  q_buf.resize(static_cast<size_t>(p.m * p.k));
  d_buf.resize(static_cast<size_t>(p.m * ng));
  s_buf.resize(static_cast<size_t>(p.m * nb));
  int8_t* q = q_buf.data();
  float* d = d_buf.data();
  float* s = s_buf.data();
#pragma omp parallel for schedule(static) if (p.m * p.k > 65536)
  for (int64_t r = 0; r < p.m; ++r)
    detail::quantize_row(p.x + r * p.k, p.k, q + r * p.k, d + r * ng, s + r * nb);
  const detail::QuantizedX x{q, d, s, p.k};
  switch (p.format) {
    case QuantFormat::kQ8_0:
      return run_tiles<QuantFormat::kQ8_0>(p, x, tile_set<QuantFormat::kQ8_0>(isa));
    case QuantFormat::kQ4_0:
      return run_tiles<QuantFormat::kQ4_0>(p, x, tile_set<QuantFormat::kQ4_0>(isa));
    case QuantFormat::kQ4_1:
      return run_tiles<QuantFormat::kQ4_1>(p, x, tile_set<QuantFormat::kQ4_1>(isa));
  }
}

bool quant_dot_isa_supported(QuantDotIsa isa) {
  switch (isa) {
    case QuantDotIsa::kAuto:
    case QuantDotIsa::kScalar:
      return true;
    case QuantDotIsa::kAvx2:
      return kBuiltWithAvx2;
    case QuantDotIsa::kAvxVnni:
      return kBuiltWithAvx2 && cpu_has_avx_vnni();
    case QuantDotIsa::kAvx512Vnni:
      return kBuiltWithAvx2 && cpu_has_avx512_vnni();
  }
  return false;
}

void dequantize_rows(QuantFormat format, const uint8_t* src, int64_t k, const int32_t* rows,
                     int64_t num_rows, float* dst) {
  const int64_t row_bytes = quant_row_bytes(format, k);
  for (int64_t r = 0; r < num_rows; ++r) {
    const uint8_t* row = src + static_cast<int64_t>(rows[r]) * row_bytes;
    switch (format) {
      case QuantFormat::kQ8_0:
        dequant_row<QuantFormat::kQ8_0>(row, k, dst + r * k);
        break;
      case QuantFormat::kQ4_0:
        dequant_row<QuantFormat::kQ4_0>(row, k, dst + r * k);
        break;
      case QuantFormat::kQ4_1:
        dequant_row<QuantFormat::kQ4_1>(row, k, dst + r * k);
        break;
    }
  }
}

}  // namespace macserve::kernels::cpu
