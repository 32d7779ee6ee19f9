// CPU linear layers against this machine's FMA peak: a probe measures the peak (independent AVX2
// FMA chains on every OpenMP thread), then the batch-invariant kernels run SmolLM2-135M's linear
// shapes at prefill sizes m = 512 / 2048 (the default chunk) with f32 and Q4_1 weights, and decode
// (m = 1) as GB/s of weights streamed. Q4_1 rows: "q4_1" is the integer-dot kernel quant_linear
// picks on this CPU (VNNI where present), "q4_1_avx2" the AVX2 one. Prints CSV on stdout; results
// in docs/perf/cpu.md.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <utility>
#include <vector>

#include "macserve/kernels/gemm.h"
#include "macserve/kernels/quant.h"

namespace k = macserve::kernels;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// 10 independent accumulators per thread hide the FMA latency (5 cycles x 2 pipes on Zen 2).
double fma_peak_gflops() {
  constexpr int64_t kIters = 5'000'000;
  double best = 0;
  for (int rep = 0; rep < 7; ++rep) {  // best of 7: a rep that loses a core reads low
    const auto t0 = Clock::now();
    float sink = 0;
#pragma omp parallel reduction(+ : sink)
    {
      __m256 a[10];
      for (int i = 0; i < 10; ++i)
        a[i] = _mm256_set1_ps(static_cast<float>(omp_get_thread_num() + i));
      const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-7f);
      for (int64_t it = 0; it < kIters; ++it)
        for (auto& v : a) v = _mm256_fmadd_ps(v, b, c);
      for (auto& v : a) sink += _mm256_cvtss_f32(v);
    }
    const double s = seconds_since(t0);
    if (sink == 12345.0f) std::printf("#\n");  // keeps the loop
    best = std::max(best, 2.0 * 8 * 10 * kIters * omp_get_max_threads() / s / 1e9);
  }
  return best;
}

template <typename F>
double time_best(F&& f, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

std::vector<uint8_t> q4_1_blocks(int64_t n, int64_t kdim) {
  std::vector<uint8_t> w(
      static_cast<std::size_t>(n * k::quant_row_bytes(k::QuantFormat::kQ4_1, kdim)));
  std::mt19937 rng(1);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  for (std::size_t b = 0; b < w.size(); b += 20) {  // sane fp16 d = 0.01, m = -0.05
    w[b] = 0x1f, w[b + 1] = 0x21, w[b + 2] = 0x66, w[b + 3] = 0xaa;
  }
  return w;
}

}  // namespace

int main() {
  const double peak = fma_peak_gflops();
  std::printf("# threads %d, FMA peak %.1f GFLOP/s (probe)\n", omp_get_max_threads(), peak);
  std::printf("weights,m,n,k,ms,gflops,fraction_of_peak,weight_gb_per_s\n");
  struct Shape {
    int64_t n, kdim;
  };
  // SmolLM2-135M: q/o (576 x 576), k/v (192 x 576), gate_up (3072 x 576), down (576 x 1536).
  const Shape shapes[] = {{576, 576}, {192, 576}, {3072, 576}, {576, 1536}};
  std::mt19937 rng(2);
  std::normal_distribution<float> nd;
  for (const int64_t m : {1, 512, 2048}) {  // 2048: the engine's default prefill chunk
    for (const Shape& s : shapes) {
      std::vector<float> x(static_cast<std::size_t>(m * s.kdim)),
          w(static_cast<std::size_t>(s.n * s.kdim));
      std::vector<float> y(static_cast<std::size_t>(m * s.n));
      for (float& v : x) v = nd(rng);
      for (float& v : w) v = nd(rng) * 0.05f;
      const auto wq = q4_1_blocks(s.n, s.kdim);
      const int reps = m == 1 ? 50 : 2;
      const double flops = 2.0 * m * s.n * s.kdim;
      const double t32 = time_best(
          [&] {
            k::cpu::linear({x.data(), w.data(), nullptr, y.data(), m, s.n, s.kdim});
          },
          reps);
      // Quantized weights: the ISA quant_linear picks on this CPU, and the AVX2 kernel that stays
      // for CPUs without VNNI (same results bit for bit).
      const auto time_q = [&](k::QuantDotIsa isa) {
        return time_best(
            [&] {
              k::cpu::quant_linear({x.data(), wq.data(), nullptr, y.data(), m, s.n, s.kdim,
                                    k::QuantFormat::kQ4_1, isa});
            },
            reps);
      };
      const double tq = time_q(k::QuantDotIsa::kAuto);
      const double tq2 = time_q(k::QuantDotIsa::kAvx2);
      std::printf("f32,%ld,%ld,%ld,%.4f,%.2f,%.3f,%.2f\n", m, s.n, s.kdim, t32 * 1e3,
                  flops / t32 / 1e9, flops / t32 / 1e9 / peak, w.size() * 4.0 / t32 / 1e9);
      for (const auto& [name, tq_] : {std::pair{"q4_1", tq}, std::pair{"q4_1_avx2", tq2}})
        std::printf("%s,%ld,%ld,%ld,%.4f,%.2f,%.3f,%.2f\n", name, m, s.n, s.kdim, tq_ * 1e3,
                    flops / tq_ / 1e9, flops / tq_ / 1e9 / peak, wq.size() / tq_ / 1e9);
    }
  }
  return 0;
}
