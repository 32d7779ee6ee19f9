// CPU kernels against straightforward double-precision references on random inputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "macserve/kernels/activation.h"
#include "macserve/kernels/attention.h"
#include "macserve/kernels/gemm.h"
#include "macserve/kernels/kv_write.h"
#include "macserve/kernels/rms_norm.h"
#include "macserve/kernels/rope.h"

namespace k = macserve::kernels;

namespace {

// Whether a[0, n) and b[0, n) hold the same bits (NaNs included).
bool same_bits(const float* a, const float* b, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i])) return false;
  return true;
}

std::vector<float> randn(std::size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(KernelsCpu, RmsNormWithAndWithoutResidual) {
  const int64_t rows = 5, dim = 37;
  auto x = randn(rows * dim, 1), w = randn(dim, 2), res = randn(rows * dim, 3);
  std::vector<float> out(rows * dim, NAN), res2 = res;
  k::cpu::rms_norm({x.data(), res2.data(), w.data(), out.data(), rows, dim, 1e-5f});
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) {
      const double s = double(x[r * dim + i]) + res[r * dim + i];
      EXPECT_NEAR(res2[r * dim + i], s, 1e-6);
      ss += s * s;
    }
    const double inv = 1.0 / std::sqrt(ss / dim + 1e-5);
    for (int64_t i = 0; i < dim; ++i)
      EXPECT_NEAR(out[r * dim + i], w[i] * (double(x[r * dim + i]) + res[r * dim + i]) * inv, 1e-5);
  }
}

TEST(KernelsCpu, RopeRotatesHalvesAndPreservesNorm) {
  const int64_t T = 3, Hq = 2, Hk = 1, D = 8;
  std::vector<float> inv(D / 2);
  k::cpu::rope_inv_freq({D, 10000.0f}, inv.data());
  for (int64_t i = 0; i < D / 2; ++i) EXPECT_NEAR(inv[i], std::pow(10000.0, -2.0 * i / D), 1e-7);
  auto q = randn(T * Hq * D, 4), kk = randn(T * Hk * D, 5);
  auto q0 = q;
  std::vector<int32_t> pos = {0, 5, 1000};
  k::cpu::rope({q.data(), kk.data(), pos.data(), inv.data(), T, Hq, Hk, D});
  for (int64_t i = 0; i < Hq * D; ++i) EXPECT_FLOAT_EQ(q[i], q0[i]);  // position 0: identity
  const int64_t t = 1, h = 1;
  for (int64_t i = 0; i < D / 2; ++i) {
    const double a = q0[(t * Hq + h) * D + i], b = q0[(t * Hq + h) * D + i + D / 2];
    const double ang = 5.0 * inv[i];
    EXPECT_NEAR(q[(t * Hq + h) * D + i], a * std::cos(ang) - b * std::sin(ang), 1e-5);
    EXPECT_NEAR(q[(t * Hq + h) * D + i + D / 2], b * std::cos(ang) + a * std::sin(ang), 1e-5);
  }
}

TEST(KernelsCpu, Llama3RopeScalingKeepsHighAndDividesLowFrequencies) {
  const int64_t D = 128;
  std::vector<float> plain(D / 2), scaled(D / 2);
  k::cpu::rope_inv_freq({D, 500000.0f}, plain.data());
  k::cpu::rope_inv_freq({D, 500000.0f, k::RopeScalingType::kLlama3, 8.0f, 1.0f, 4.0f, 8192},
                        scaled.data());
  EXPECT_FLOAT_EQ(scaled[0], plain[0]);                         // high frequency: unchanged
  EXPECT_FLOAT_EQ(scaled[D / 2 - 1], plain[D / 2 - 1] / 8.0f);  // low frequency: divided by factor
}

TEST(KernelsCpu, SwigluMatchesDefinition) {
  const int64_t T = 2, I = 9;
  auto gu = randn(T * 2 * I, 6);
  std::vector<float> out(T * I, NAN);
  k::cpu::swiglu({gu.data(), out.data(), T, I});
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < I; ++i) {
      const double g = gu[t * 2 * I + i], u = gu[t * 2 * I + I + i];
      EXPECT_NEAR(out[t * I + i], g / (1 + std::exp(-g)) * u, 1e-6);
    }
}

// Paged attention over a shuffled block table against dense softmax in double.
TEST(KernelsCpu, PagedAttentionMatchesDenseReference) {
  const int64_t Hq = 4, Hk = 2, D = 16, bs = 4, num_blocks = 16;
  const std::vector<int32_t> ctx = {1, 9, 17};  // three sequences
  const std::vector<int32_t> nq = {1, 3, 17};   // decode, chunk, full prefill
  std::vector<int32_t> table;
  std::vector<int32_t> ids(num_blocks);
  for (int i = 0; i < num_blocks; ++i) ids[i] = i;
  std::shuffle(ids.begin(), ids.end(), std::mt19937(9));
  const int64_t max_blocks = 5;
  for (int s = 0; s < 3; ++s)
    for (int b = 0; b < max_blocks; ++b) table.push_back(ids[s * max_blocks + b]);
  k::PagedKvLayout L{num_blocks, Hk, bs, D};
  auto kc = randn(num_blocks * Hk * bs * D, 10), vc = randn(num_blocks * Hk * bs * D, 11);
  std::vector<int32_t> qs = {0};
  for (int s = 0; s < 3; ++s) qs.push_back(qs.back() + nq[s]);
  const int64_t T = qs.back();
  auto q = randn(T * Hq * D, 12);
  std::vector<float> out(T * Hq * D, NAN);
  k::PagedAttentionParams p{q.data(),     kc.data(), vc.data(),  out.data(), qs.data(), ctx.data(),
                            table.data(), 3,         max_blocks, Hq,         0.25f,     L};
  k::cpu::paged_attention(p);
  for (int s = 0; s < 3; ++s)
    for (int i = 0; i < nq[s]; ++i) {
      const int64_t t = qs[s] + i, pos = ctx[s] - nq[s] + i;
      for (int64_t h = 0; h < Hq; ++h) {
        std::vector<double> w(pos + 1);
        double mx = -1e300, sum = 0;
        for (int64_t j = 0; j <= pos; ++j) {
          const int64_t slot = int64_t(table[s * max_blocks + j / bs]) * bs + j % bs;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += double(q[(t * Hq + h) * D + d]) * kc[L.offset(slot, h / 2) + d];
          w[j] = dot * 0.25;
          mx = std::max(mx, w[j]);
        }
        for (double& x : w) sum += (x = std::exp(x - mx));
        for (int64_t d = 0; d < D; ++d) {
          double o = 0;
          for (int64_t j = 0; j <= pos; ++j) {
            const int64_t slot = int64_t(table[s * max_blocks + j / bs]) * bs + j % bs;
            o += w[j] / sum * vc[L.offset(slot, h / 2) + d];
          }
          EXPECT_NEAR(out[(t * Hq + h) * D + d], o, 1e-5)
              << "seq " << s << " query " << i << " head " << h;
        }
      }
    }
}

// Attention rows are bit-identical however the prompt is chunked and whatever shares the step: one
// 600-token prefill, chunks of 7 (each over the cache the earlier chunks wrote), every token alone
// as a decode step (few rows: key segments spread over the threads), and the same next to another
// sequence. Contexts span several key segments, key blocks and query tiles of the kernel.
TEST(KernelsCpu, PagedAttentionIsChunkAndBatchInvariant) {
  const int64_t Hq = 6, Hk = 2, D = 24, bs = 8, num_blocks = 160, n = 600;
  k::PagedKvLayout L{num_blocks, Hk, bs, D};
  auto kc = randn(num_blocks * Hk * bs * D, 40), vc = randn(num_blocks * Hk * bs * D, 41);
  auto q = randn(n * Hq * D, 42), q_other = randn(5 * Hq * D, 43);
  const int64_t max_blocks = 80;
  std::vector<int32_t> table(2 * max_blocks);  // sequence 0, then the neighbour
  for (int64_t b = 0; b < 2 * max_blocks; ++b)
    table[b] = static_cast<int32_t>((b * 7) % num_blocks);  // scattered pages
  // Runs tokens [t0, t1) of the sequence as one step (context t1), optionally after the neighbour's
  // 5 tokens (context 60); returns the sequence's rows.
  auto run = [&](int64_t t0, int64_t t1, bool neighbour) {
    std::vector<float> qq(q_other.begin(), q_other.begin() + (neighbour ? 5 * Hq * D : 0));
    qq.insert(qq.end(), q.begin() + t0 * Hq * D, q.begin() + t1 * Hq * D);
    std::vector<int32_t> qs = {0}, ctx, tbl;
    if (neighbour) {
      qs.push_back(5), ctx.push_back(60);
      tbl.insert(tbl.end(), table.begin() + max_blocks, table.end());
    }
    qs.push_back(qs.back() + static_cast<int32_t>(t1 - t0)),
        ctx.push_back(static_cast<int32_t>(t1));
    tbl.insert(tbl.begin(), table.begin(), table.begin() + max_blocks);
    if (neighbour) std::rotate(tbl.begin(), tbl.begin() + max_blocks, tbl.end());
    std::vector<float> out(qq.size(), NAN);
    k::PagedAttentionParams p{qq.data(),  kc.data(),  vc.data(),  out.data(),
                              qs.data(),  ctx.data(), tbl.data(), static_cast<int64_t>(ctx.size()),
                              max_blocks, Hq,         0.2f,       L};
    k::cpu::paged_attention(p);
    return std::vector<float>(out.end() - (t1 - t0) * Hq * D, out.end());
  };
  const auto whole = run(0, n, false);
  std::vector<float> chunked, alone, mixed;
  for (int64_t t0 = 0; t0 < n; t0 += 7) {
    const auto c = run(t0, std::min(t0 + 7, n), false);
    chunked.insert(chunked.end(), c.begin(), c.end());
  }
  for (int64_t t = 0; t < n; ++t) {
    const auto a = run(t, t + 1, false), m = run(t, t + 1, true);
    alone.insert(alone.end(), a.begin(), a.end());
    mixed.insert(mixed.end(), m.begin(), m.end());
  }
  const std::size_t bytes = whole.size() * sizeof(float);
  EXPECT_EQ(std::memcmp(whole.data(), chunked.data(), bytes), 0);
  EXPECT_EQ(std::memcmp(whole.data(), alone.data(), bytes), 0);
  EXPECT_EQ(std::memcmp(whole.data(), mixed.data(), bytes), 0);
  // and the last row against softmax in double
  const int64_t t = n - 1;
  for (int64_t h = 0; h < Hq; ++h) {
    std::vector<double> w(n);
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < n; ++j) {
      const int64_t slot = int64_t(table[j / bs]) * bs + j % bs;
      double dot = 0;
      for (int64_t d = 0; d < D; ++d)
        dot += double(q[(t * Hq + h) * D + d]) * kc[L.offset(slot, h / 3) + d];
      mx = std::max(mx, w[j] = dot * 0.2);
    }
    for (double& x : w) sum += (x = std::exp(x - mx));
    for (int64_t d = 0; d < D; ++d) {
      double o = 0;
      for (int64_t j = 0; j < n; ++j)
        o += w[j] / sum * vc[L.offset(int64_t(table[j / bs]) * bs + j % bs, h / 3) + d];
      EXPECT_NEAR(whole[(t * Hq + h) * D + d], o, 1e-5) << "head " << h << " dim " << d;
    }
  }
}

TEST(KernelsCpu, KvWriteScattersToSlotsAndSkipsNegative) {
  k::PagedKvLayout L{4, 2, 2, 3};
  std::vector<float> kc(std::size_t{4} * 2 * 2 * 3, -1.0f), vc = kc;
  auto kk = randn(std::size_t{2} * 2 * 3, 13), vv = randn(std::size_t{2} * 2 * 3, 14);
  std::vector<int64_t> slots = {5, -1};
  k::cpu::kv_write({kk.data(), vv.data(), kc.data(), vc.data(), slots.data(), 2, L});
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t d = 0; d < 3; ++d) {
      EXPECT_EQ(kc[L.offset(5, h) + d], kk[h * 3 + d]);
      EXPECT_EQ(vc[L.offset(5, h) + d], vv[h * 3 + d]);
    }
  int untouched = 0;
  for (float x : kc) untouched += x == -1.0f;
  EXPECT_EQ(untouched, static_cast<int>(kc.size()) - 6);
}

// The attention prologue on fused [q | k | v] rows against what the decoder ran before the Q/K/V
// GEMMs were fused: per-head rms_norm of q and k (Qwen3) in place on split buffers, the q_pre
// copy, rope, kv_write. Bit-identical, with and without the norm and q_pre, a padding token, and
// token counts on both sides of the OpenMP threshold.
TEST(KernelsCpu, RopeKvWriteOnFusedRowsMatchesSeparateOps) {
  struct Shape {
    int64_t T, Hq, Hkv, D;
    bool norm, pre;
  };
  for (const Shape& sh : {Shape{1, 9, 3, 64, false, true}, Shape{3, 4, 4, 8, true, false},
                          Shape{37, 8, 2, 64, false, false}, Shape{20, 16, 8, 128, true, true},
                          Shape{9, 6, 2, 10, true, true}}) {
    const int64_t T = sh.T, Hq = sh.Hq, Hkv = sh.Hkv, D = sh.D, bs = 4;
    const int64_t width = (Hq + 2 * Hkv) * D, num_blocks = T / bs + 2;
    const k::PagedKvLayout L{num_blocks, Hkv, bs, D};
    const auto seed = static_cast<uint32_t>(T * 31 + D);
    const auto qkv = randn(T * width, seed), qn = randn(D, seed + 1), kn = randn(D, seed + 2);
    std::vector<float> inv(D / 2);
    k::cpu::rope_inv_freq({D, 1000000.0f}, inv.data());
    std::vector<int32_t> pos(T);
    std::vector<int64_t> slots(T);
    for (int64_t t = 0; t < T; ++t) {
      pos[t] = static_cast<int32_t>(t * 977 % 30000);
      slots[t] = (t * 5 + 3) % (num_blocks * bs);  // distinct: 5 is coprime to num_blocks * bs
    }
    if (T > 2) slots[1] = -1;  // padding row: no KV write
    // Before: split copies of the rows, then the separate ops.
    std::vector<float> q(T * Hq * D), kk(T * Hkv * D), vv(T * Hkv * D);
    for (int64_t t = 0; t < T; ++t) {
      const float* row = qkv.data() + t * width;
      std::copy(row, row + Hq * D, q.begin() + t * Hq * D);
      std::copy(row + Hq * D, row + (Hq + Hkv) * D, kk.begin() + t * Hkv * D);
      std::copy(row + (Hq + Hkv) * D, row + width, vv.begin() + t * Hkv * D);
    }
    const std::vector<float> cache0 = randn(num_blocks * Hkv * bs * D, seed + 3);
    std::vector<float> kc = cache0, vc = cache0, pre(q.size(), NAN);
    if (sh.norm) {
      k::cpu::rms_norm({q.data(), nullptr, qn.data(), q.data(), T * Hq, D, 1e-6f});
      k::cpu::rms_norm({kk.data(), nullptr, kn.data(), kk.data(), T * Hkv, D, 1e-6f});
    }
    if (sh.pre) pre = q;
    k::cpu::rope({q.data(), kk.data(), pos.data(), inv.data(), T, Hq, Hkv, D});
    k::cpu::kv_write({kk.data(), vv.data(), kc.data(), vc.data(), slots.data(), T, L});
    // After: one call on the fused rows (outputs poisoned).
    std::vector<float> q2(q.size(), NAN), pre2(q.size(), NAN), kc2 = cache0, vc2 = cache0;
    k::cpu::rope_kv_write({qkv.data(), q2.data(), sh.pre ? pre2.data() : nullptr,
                           sh.norm ? qn.data() : nullptr, sh.norm ? kn.data() : nullptr, 1e-6f,
                           pos.data(), inv.data(), kc2.data(), vc2.data(), slots.data(), T, Hq, L});
    const auto bits_equal = [](const std::vector<float>& a, const std::vector<float>& b) {
      return a.size() == b.size() && same_bits(a.data(), b.data(), static_cast<int64_t>(a.size()));
    };
    EXPECT_TRUE(bits_equal(q2, q)) << "T " << T << " D " << D << " norm " << sh.norm;
    EXPECT_TRUE(bits_equal(kc2, kc)) << "T " << T << " D " << D << " norm " << sh.norm;
    EXPECT_TRUE(bits_equal(vc2, vc)) << "T " << T << " D " << D << " norm " << sh.norm;
    if (sh.pre) {
      EXPECT_TRUE(bits_equal(pre2, pre)) << "T " << T << " D " << D;
    }
    EXPECT_FALSE(bits_equal(kc2, cache0)) << "the test must write the cache";
  }
}

}  // namespace

namespace {

// Every row of y is bit-identical whatever the number of rows computed with it: the property that
// makes "batched equals alone" exact.
TEST(KernelsCpu, LinearIsBatchInvariantAndAccurate) {
  for (int64_t K : {5, 64, 77, 576}) {
    for (int64_t N : {1, 6, 192}) {
      auto w = randn(N * K, 20), x = randn(300 * K, 21), b = randn(N, 22);
      std::vector<float> ref(N, NAN);
      k::cpu::linear({x.data(), w.data(), b.data(), ref.data(), 1, N, K});
      for (int64_t n = 0; n < N; ++n) {
        double s = b[n];
        for (int64_t i = 0; i < K; ++i) s += double(x[i]) * w[n * K + i];
        EXPECT_NEAR(ref[n], s, 1e-4 * std::sqrt(double(K)));
      }
      for (int64_t M : {2, 3, 4, 7, 31, 64, 257}) {
        std::vector<float> y(M * N, NAN);
        k::cpu::linear({x.data(), w.data(), b.data(), y.data(), M, N, K});
        ASSERT_EQ(std::memcmp(y.data(), ref.data(), N * sizeof(float)), 0)
            << "K " << K << " N " << N << " M " << M;
        // the last row equals that row computed alone
        std::vector<float> alone(N, NAN);
        k::cpu::linear({x.data() + (M - 1) * K, w.data(), b.data(), alone.data(), 1, N, K});
        ASSERT_EQ(std::memcmp(y.data() + (M - 1) * N, alone.data(), N * sizeof(float)), 0);
      }
    }
  }
}

// Every output element is the reduction gemm_tile.h documents, bit for bit: 8 lanes accumulate
// k = j mod 8 in order with FMA, then lanes (l, l + 4), then (0, 2) + (1, 3), then the k % 8 tail
// with FMA, then the bias. Full tiles without a k tail sum four outputs at once (hsum4), the others
// one at a time: both must follow it.
TEST(KernelsCpu, LinearFollowsTheDocumentedReductionOrder) {
  for (int64_t K : {8, 77, 576}) {
    for (int64_t N : {7, 192}) {
      for (int64_t M : {1, 5, 300}) {
        auto w = randn(N * K, 26), x = randn(M * K, 27), b = randn(N, 28);
        for (const float* bias :
             {static_cast<const float*>(nullptr), static_cast<const float*>(b.data())}) {
          std::vector<float> y(M * N, NAN), ref(M * N, NAN);
          k::cpu::linear({x.data(), w.data(), bias, y.data(), M, N, K});
          const int64_t k8 = K / 8 * 8;
          for (int64_t r = 0; r < M; ++r)
            for (int64_t c = 0; c < N; ++c) {
              const float* xr = x.data() + r * K;
              const float* wr = w.data() + c * K;
              float a[8] = {};
              for (int64_t j = 0; j < k8; j += 8)
                for (int l = 0; l < 8; ++l) a[l] = std::fma(xr[j + l], wr[j + l], a[l]);
              const float b0 = a[0] + a[4], b1 = a[1] + a[5], b2 = a[2] + a[6], b3 = a[3] + a[7];
              float s = (b0 + b2) + (b1 + b3);
              for (int64_t j = k8; j < K; ++j) s = std::fma(xr[j], wr[j], s);
              if (bias != nullptr) s += bias[c];
              ref[r * N + c] = s;
            }
          ASSERT_TRUE(same_bits(y.data(), ref.data(), M * N))
              << "K " << K << " N " << N << " M " << M << " bias " << (bias != nullptr);
        }
      }
    }
  }
}

// Large m runs blocked (x in row blocks, weights in panels per thread: gemm_tile.h); every row must
// still equal that row computed alone, across block and panel edges and partial tiles.
TEST(KernelsCpu, BlockedLinearEqualsEveryRowAlone) {
  const int64_t M = 200, N = 517, K = 1536;  // 30-row x blocks at K 1536; 130 tiles, last partial
  auto w = randn(N * K, 23), x = randn(M * K, 24), b = randn(N, 25);
  std::vector<float> y(M * N, NAN), alone(N, NAN);
  k::cpu::linear({x.data(), w.data(), b.data(), y.data(), M, N, K});
  for (int64_t r = 0; r < M; ++r) {
    k::cpu::linear({x.data() + r * K, w.data(), b.data(), alone.data(), 1, N, K});
    ASSERT_TRUE(same_bits(y.data() + r * N, alone.data(), N)) << "row " << r;
  }
}

}  // namespace
