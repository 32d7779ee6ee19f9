// Quantized-weight kernels (kernels/quant.h): the integer-dot kernel against the f32 kernel over
// the dequantized weights (error bounds per format), bit for bit against the arithmetic quant_dot.h
// documents (re-implemented here in plain scalar code) on every ISA this machine runs, and every
// row bit-identical whatever the batch. Also the embedding lookup's dequantization against the
// block definitions in double.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "macserve/core/dtype.h"
#include "macserve/kernels/gemm.h"
#include "macserve/kernels/quant.h"

namespace k = macserve::kernels;
using k::QuantFormat;

namespace {

// Random blocks: scales and offsets of the magnitude GGUF files hold (|d| ~ 1e-3..1e-1), every
// quant value possible.
std::vector<uint8_t> random_blocks(QuantFormat f, int64_t rows, int64_t kdim, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> scale(1e-3f, 0.1f), offset(-0.5f, 0.5f);
  std::uniform_int_distribution<int> byte(0, 255);
  const int64_t bb = k::quant_block_bytes(f);
  std::vector<uint8_t> w(static_cast<std::size_t>(rows * k::quant_row_bytes(f, kdim)));
  for (std::size_t b = 0; b < w.size(); b += static_cast<std::size_t>(bb)) {
    const uint16_t d = macserve::float_to_half(byte(rng) < 128 ? scale(rng) : -scale(rng));
    std::memcpy(&w[b], &d, 2);
    int64_t q = 2;
    if (f == QuantFormat::kQ4_1) {
      const uint16_t m = macserve::float_to_half(offset(rng));
      std::memcpy(&w[b + 2], &m, 2);
      q = 4;
    }
    for (int64_t i = q; i < bb; ++i)
      w[b + static_cast<std::size_t>(i)] = static_cast<uint8_t>(byte(rng));
  }
  return w;
}

// Element i of a row, by the format's definition, in double.
double ref_element(QuantFormat f, const uint8_t* row, int64_t i) {
  const uint8_t* b = row + i / 32 * k::quant_block_bytes(f);
  uint16_t dh, mh;
  std::memcpy(&dh, b, 2);
  std::memcpy(&mh, b + 2, 2);
  const double d = macserve::half_to_float(dh);
  const int64_t j = i % 32;
  switch (f) {
    case QuantFormat::kQ8_0:
      return static_cast<int8_t>(b[2 + j]) * d;
    case QuantFormat::kQ4_0:
      return ((j < 16 ? b[2 + j] & 0x0f : b[2 + j - 16] >> 4) - 8) * d;
    case QuantFormat::kQ4_1:
      return (j < 16 ? b[4 + j] & 0x0f : b[4 + j - 16] >> 4) * d + macserve::half_to_float(mh);
  }
  return NAN;
}

std::vector<float> randn(std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

std::vector<float> run(QuantFormat f, const std::vector<float>& x, const std::vector<uint8_t>& w,
                       const float* bias, int64_t m, int64_t n, int64_t kdim,
                       k::QuantDotIsa isa = k::QuantDotIsa::kAuto) {
  std::vector<float> y(static_cast<std::size_t>(m * n), NAN);
  k::cpu::quant_linear({x.data(), w.data(), bias, y.data(), m, n, kdim, f, isa});
  return y;
}

// Every ISA this machine runs (scalar and kAuto always; AVX2, AVX-VNNI, AVX-512 VNNI if present).
std::vector<k::QuantDotIsa> isas() {
  std::vector<k::QuantDotIsa> out;
  for (const auto isa : {k::QuantDotIsa::kAuto, k::QuantDotIsa::kScalar, k::QuantDotIsa::kAvx2,
                         k::QuantDotIsa::kAvxVnni, k::QuantDotIsa::kAvx512Vnni})
    if (k::cpu::quant_dot_isa_supported(isa)) out.push_back(isa);
  return out;
}

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return macserve::half_to_float(h);
}

// The arithmetic kernels/cpu/quant_dot.h documents, in plain scalar code: x rows quantized per
// group of 4 (d = max|x| / 127, q = round half even of x / d, per block s = fma(d, sum q, s) over
// its 8 groups), eight exact int32 lanes of 4 products per block, acc[l] = fma(lane, d_x[l] * d_w,
// acc[l]), Q4_1's fma(s, m_w, mterm), the fixed horizontal tree, then mterm, then bias.
std::vector<float> reference_arithmetic(QuantFormat f, const std::vector<float>& x,
                                        const std::vector<uint8_t>& w, const float* bias, int64_t m,
                                        int64_t n, int64_t kdim) {
  const int64_t nb = kdim / 32, bb = k::quant_block_bytes(f), rb = k::quant_row_bytes(f, kdim);
  std::vector<float> y(static_cast<std::size_t>(m * n));
  for (int64_t r = 0; r < m; ++r) {
    std::vector<int> q(static_cast<std::size_t>(kdim));
    std::vector<float> d(static_cast<std::size_t>(kdim / 4)), s(static_cast<std::size_t>(nb));
    for (int64_t g = 0; g < kdim / 4; ++g) {
      float amax = 0;
      for (int64_t e = 0; e < 4; ++e) amax = std::max(amax, std::abs(x[r * kdim + g * 4 + e]));
      d[g] = amax / 127.0f;
      const float id = d[g] != 0.0f ? 1.0f / d[g] : 0.0f;
      int sum = 0;
      for (int64_t e = 0; e < 4; ++e) {
        q[g * 4 + e] = static_cast<int>(std::nearbyint(x[r * kdim + g * 4 + e] * id));
        sum += q[g * 4 + e];
      }
      s[g / 8] = std::fma(d[g], static_cast<float>(sum), g % 8 == 0 ? 0.0f : s[g / 8]);
    }
    for (int64_t c = 0; c < n; ++c) {
      float acc[8] = {}, mterm = 0;
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* blk = w.data() + c * rb + b * bb;
        int lane[8] = {};
        for (int e = 0; e < 32; ++e) {
          int wi = 0;
          switch (f) {
            case QuantFormat::kQ8_0:
              wi = static_cast<int8_t>(blk[2 + e]);
              break;
            case QuantFormat::kQ4_0:
              wi = (e < 16 ? blk[2 + e] & 0x0f : blk[2 + e - 16] >> 4) - 8;
              break;
            case QuantFormat::kQ4_1:
              wi = e < 16 ? blk[4 + e] & 0x0f : blk[4 + e - 16] >> 4;
              break;
          }
          lane[e / 4] += wi * q[b * 32 + e];
        }
        for (int l = 0; l < 8; ++l)
          acc[l] = std::fma(static_cast<float>(lane[l]), d[b * 8 + l] * half_at(blk), acc[l]);
        if (f == QuantFormat::kQ4_1) mterm = std::fma(s[b], half_at(blk + 2), mterm);
      }
      float v = ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]));
      if (f == QuantFormat::kQ4_1) v += mterm;
      if (bias != nullptr) v += bias[c];
      y[r * n + c] = v;
    }
  }
  return y;
}

class QuantGemm : public ::testing::TestWithParam<QuantFormat> {};

// Against the f32 kernel over the dequantized weights (what `--cpu-weights f32` computes), error
// relative to sum_k |x_k w_k| per output; the difference is the activations' 8-bit rounding
// (|error| <= d / 2 = max|x| / 254 over the element's group of 4, partly cancelling over k).
// Measured maxima over k 576 and 1536, 3 x 37 outputs, gaussian x (the printed lines): Q8_0 4.6e-4,
// Q4_0 7.5e-4, Q4_1 6.7e-4; bounded at 2e-3 for all three, while a wrong nibble order, scale,
// group scale or offset term gives O(0.1-1).
TEST_P(QuantGemm, MatchesTheF32KernelOverDequantizedWeightsWithinBound) {
  const QuantFormat f = GetParam();
  for (const int64_t kdim : {576, 1536}) {
    const int64_t m = 3, n = 37;
    const auto w = random_blocks(f, n, kdim, 11);
    const auto x = randn(static_cast<std::size_t>(m * kdim), 12);
    const auto bias = randn(static_cast<std::size_t>(n), 13);
    const auto y = run(f, x, w, bias.data(), m, n, kdim);
    std::vector<int32_t> rows(n);
    for (int32_t i = 0; i < n; ++i) rows[i] = i;
    std::vector<float> wf(static_cast<std::size_t>(n * kdim)), y32(static_cast<std::size_t>(m * n));
    k::cpu::dequantize_rows(f, w.data(), kdim, rows.data(), n, wf.data());
    k::cpu::linear({x.data(), wf.data(), bias.data(), y32.data(), m, n, kdim});
    double worst = 0;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) {
        double mag = std::abs(bias[c]);
        for (int64_t i = 0; i < kdim; ++i)
          mag += std::abs(static_cast<double>(x[r * kdim + i]) * wf[c * kdim + i]);
        worst = std::max(worst, std::abs(static_cast<double>(y[r * n + c]) - y32[r * n + c]) / mag);
      }
    EXPECT_LT(worst, 2e-3) << "k " << kdim;
    EXPECT_GT(worst, 0.0) << "k " << kdim << ": the activations are quantized, so some error";
    std::printf("k %ld: max |quant - f32| / sum |x w| = %.3g\n", static_cast<long>(kdim), worst);
  }
}

// Every ISA's kernel is exactly the documented arithmetic: bit-identical to the scalar
// re-implementation above, for decode (m 1-3) and prefill (m 9: tiles of 4 and a tail) shapes, with
// an all-zero activation block (d = 0) in the mix and every weight byte value (Q8_0's -128 too).
TEST_P(QuantGemm, EveryIsaIsTheDocumentedArithmeticBitForBit) {
  const QuantFormat f = GetParam();
  const int64_t n = 11, kdim = 320;
  const auto w = random_blocks(f, n, kdim, 41);
  const auto bias = randn(static_cast<std::size_t>(n), 43);
  for (const int64_t m : {1, 2, 3, 9}) {
    auto x = randn(static_cast<std::size_t>(m * kdim), 42);
    std::fill(x.begin() + 32, x.begin() + 64, 0.0f);
    const auto want = reference_arithmetic(f, x, w, bias.data(), m, n, kdim);
    for (const auto isa : isas()) {
      const auto y = run(f, x, w, bias.data(), m, n, kdim, isa);
      EXPECT_EQ(0, std::memcmp(y.data(), want.data(), y.size() * sizeof(float)))
          << "m " << m << " isa " << static_cast<int>(isa);
    }
  }
}

// dequantize_rows (the embedding lookup) decodes each element to within float32 rounding of its
// definition.
TEST_P(QuantGemm, DequantizeRowsMatchesTheBlockDefinition) {
  const QuantFormat f = GetParam();
  const int64_t n = 10, kdim = 256;
  const auto w = random_blocks(f, n, kdim, 21);
  std::vector<int32_t> rows(n);
  for (int32_t i = 0; i < n; ++i) rows[i] = n - 1 - i;  // any order
  std::vector<float> wf(static_cast<std::size_t>(n * kdim));
  k::cpu::dequantize_rows(f, w.data(), kdim, rows.data(), n, wf.data());
  const int64_t rb = k::quant_row_bytes(f, kdim);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < kdim; ++i) {
      const double want = ref_element(f, w.data() + rows[r] * rb, i);
      ASSERT_NEAR(wf[r * kdim + i], want, std::abs(want) * 1.2e-7 + 1e-9)
          << "row " << r << " i " << i;
    }
}

// A row's outputs are bit-identical alone, at any place in a batch, in batches of any size (decode
// tiles for m <= 3, prefill tiles and blocking above, the threaded path included: m * n * k above
// the kernel's threading threshold), and on every ISA.
TEST_P(QuantGemm, IsBatchInvariant) {
  const QuantFormat f = GetParam();
  struct Shape {
    int64_t n, kdim, big;
  };
  // The second shape runs blocked: three x blocks (128 rows each at k 1536) and a tail.
  for (const Shape s : {Shape{96, 576, 67}, Shape{130, 1536, 300}}) {
    const auto w = random_blocks(f, s.n, s.kdim, 31);
    const auto x = randn(static_cast<std::size_t>(s.big * s.kdim), 32);
    const auto all = run(f, x, w, nullptr, s.big, s.n, s.kdim);
    for (const auto isa : isas()) {
      for (const int64_t m : {1, 2, 3, 4, 5, 8, 31}) {
        for (int64_t start = 0; start + m <= s.big; start += 13 + 40 * (s.big > 100)) {
          const std::vector<float> part(x.begin() + start * s.kdim,
                                        x.begin() + (start + m) * s.kdim);
          const auto y = run(f, part, w, nullptr, m, s.n, s.kdim, isa);
          ASSERT_EQ(0, std::memcmp(y.data(), &all[start * s.n], y.size() * sizeof(float)))
              << "k " << s.kdim << " m " << m << " at " << start << " isa "
              << static_cast<int>(isa);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantGemm,
                         ::testing::Values(QuantFormat::kQ8_0, QuantFormat::kQ4_0,
                                           QuantFormat::kQ4_1),
                         [](const auto& info) {
                           switch (info.param) {
                             case QuantFormat::kQ8_0:
                               return "Q8_0";
                             case QuantFormat::kQ4_0:
                               return "Q4_0";
                             case QuantFormat::kQ4_1:
                               return "Q4_1";
                           }
                           return "unknown";
                         });

}  // namespace
