// Quantized-weight kernels (kernels/quant.h) against an independent reference: every block decoded
// by its definition in double, the dot product summed in double. Also: the kernel is exactly the
// f32 kernel over its own dequantized rows, and every row is bit-identical whatever the batch.
#include <gtest/gtest.h>

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
                       const float* bias, int64_t m, int64_t n, int64_t kdim) {
  std::vector<float> y(static_cast<std::size_t>(m * n), NAN);
  k::cpu::quant_linear({x.data(), w.data(), bias, y.data(), m, n, kdim, f});
  return y;
}

class QuantGemm : public ::testing::TestWithParam<QuantFormat> {};

// Error of each output relative to sum_k |x_k w_k| (the scale float32 rounding works at), against
// the double reference. Measured maxima (k 576 and 1536, 3 x 37 outputs x 3 seeds): ~2e-7 for all
// three formats; bounded here at 2e-6, well below what a wrong block layout or nibble order gives
// (O(1)).
TEST_P(QuantGemm, MatchesDequantizedReferenceWithinBound) {
  const QuantFormat f = GetParam();
  for (const int64_t kdim : {576, 1536}) {
    const int64_t m = 3, n = 37;
    const auto w = random_blocks(f, n, kdim, 11);
    const auto x = randn(static_cast<std::size_t>(m * kdim), 12);
    const auto bias = randn(static_cast<std::size_t>(n), 13);
    const auto y = run(f, x, w, bias.data(), m, n, kdim);
    const int64_t rb = k::quant_row_bytes(f, kdim);
    double worst = 0;
    for (int64_t r = 0; r < m; ++r)
      for (int64_t c = 0; c < n; ++c) {
        double dot = bias[c], mag = std::abs(bias[c]);
        for (int64_t i = 0; i < kdim; ++i) {
          const double p = x[r * kdim + i] * ref_element(f, w.data() + c * rb, i);
          dot += p;
          mag += std::abs(p);
        }
        worst = std::max(worst, std::abs(y[r * n + c] - dot) / mag);
      }
    EXPECT_LT(worst, 2e-6) << "k " << kdim;
    std::printf("k %ld: max error / sum |x w| = %.3g\n", static_cast<long>(kdim), worst);
  }
}

// dequantize_rows decodes each element to within float32 rounding of its definition, and
// quant_linear is bit-identical to the f32 kernel over those rows (same values, same reduction
// order).
TEST_P(QuantGemm, IsTheF32KernelOverItsDequantizedRows) {
  const QuantFormat f = GetParam();
  const int64_t m = 7, n = 10, kdim = 256;
  const auto w = random_blocks(f, n, kdim, 21);
  const auto x = randn(static_cast<std::size_t>(m * kdim), 22);
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
  // Back in file order for the f32 kernel.
  std::vector<float> in_order(wf.size());
  for (int64_t r = 0; r < n; ++r)
    std::memcpy(&in_order[(n - 1 - r) * kdim], &wf[r * kdim], sizeof(float) * kdim);
  std::vector<float> y32(static_cast<std::size_t>(m * n));
  k::cpu::linear({x.data(), in_order.data(), nullptr, y32.data(), m, n, kdim});
  const auto yq = run(f, x, w, nullptr, m, n, kdim);
  EXPECT_EQ(0, std::memcmp(y32.data(), yq.data(), y32.size() * sizeof(float)));
}

// A row's outputs are bit-identical alone, at any place in a batch, and in batches of any size
// (the threaded path included: m * n * k above the kernel's threading threshold).
TEST_P(QuantGemm, IsBatchInvariant) {
  const QuantFormat f = GetParam();
  struct Shape {
    int64_t n, kdim, big;
  };
  // The second shape runs blocked: 30-row x blocks at k 1536, several weight panels per thread.
  for (const Shape s : {Shape{96, 576, 67}, Shape{130, 1536, 95}}) {
    const auto w = random_blocks(f, s.n, s.kdim, 31);
    const auto x = randn(static_cast<std::size_t>(s.big * s.kdim), 32);
    const auto all = run(f, x, w, nullptr, s.big, s.n, s.kdim);
    for (const int64_t m : {1, 2, 3, 4, 8, 31}) {
      for (int64_t start = 0; start + m <= s.big; start += 13) {
        const std::vector<float> part(x.begin() + start * s.kdim, x.begin() + (start + m) * s.kdim);
        const auto y = run(f, part, w, nullptr, m, s.n, s.kdim);
        ASSERT_EQ(0, std::memcmp(y.data(), &all[start * s.n], y.size() * sizeof(float)))
            << "k " << s.kdim << " m " << m << " at " << start;
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
