// Every CUDA op against the CPU float32 oracle on fresh random inputs of several shapes: outputs
// poisoned with NaN before each run (so every element must be written), relative L2 within the
// tolerance of the op's precision (bf16 operands or outputs: 1e-2; f32 paths: 1e-5).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <utility>

#include "attention_case.h"
#include "macserve/kernels/cuda/attention.cuh"
#include "macserve/kernels/rope.h"

namespace macserve::testing {
namespace {

TEST(CudaOps, Embedding) {
  MACSERVE_REQUIRE_CUDA(gpu);
  auto cpu = backend::make_cpu_backend();
  for (int64_t hidden : {64, 576, 4096}) {
    for (int64_t T : {1, 7, 33}) {
      const int64_t V = 1000;
      const auto table = round_bf16(randn(V * hidden, hidden + T));
      std::vector<int32_t> ids(T);
      std::mt19937 rng(static_cast<uint32_t>(T));
      for (auto& i : ids) i = static_cast<int32_t>(rng() % V);
      Tensor out = gpu->alloc(DType::kF32, {T, hidden});
      poison(*gpu, out);
      gpu->embedding(to_device_raw(*gpu, ids, DType::kI32),
                     gpu->upload_weight(host_tensor(table, {V, hidden})), out);
      Tensor ids_h = Tensor::empty_host(DType::kI32, {T});
      std::copy(ids.begin(), ids.end(), ids_h.data_as<int32_t>());
      Tensor ref = Tensor::empty_host(DType::kF32, {T, hidden});
      cpu->embedding(ids_h, host_tensor(table, {V, hidden}), ref);
      EXPECT_EQ(rel_l2(to_host(*gpu, out), std::vector<float>(ref.data_as<float>(),
                                                              ref.data_as<float>() + ref.numel())),
                0.0)
          << "hidden " << hidden << " T " << T;
    }
  }
}

TEST(CudaOps, RmsNormWithAndWithoutResidual) {
  MACSERVE_REQUIRE_CUDA(gpu);
  auto cpu = backend::make_cpu_backend();
  // 64-8192: rows held in registers; 10 (not a multiple of 4) and 12288 (too long): the loop.
  for (int64_t dim : {10, 64, 576, 4096, 8192, 12288}) {
    for (int64_t rows : {1, 5, 64}) {
      for (bool with_res : {false, true}) {
        for (DType out_dt : {DType::kBF16, DType::kF32}) {
          const uint64_t seed = dim * 131 + rows * 7 + with_res;
          const auto x = randn(rows * dim, seed), res = randn(rows * dim, seed + 1);
          const auto w = round_bf16(randn(dim, seed + 2, 0.5f));
          Tensor xg = to_device(*gpu, x, DType::kF32, {rows, dim}),
                 rg = to_device(*gpu, res, DType::kF32, {rows, dim});
          Tensor out = gpu->alloc(out_dt, {rows, dim});
          poison(*gpu, out);
          gpu->rms_norm(xg, with_res ? &rg : nullptr, gpu->upload_weight(host_tensor(w, {dim})),
                        out, 1e-5f);
          Tensor xh = host_tensor(x, {rows, dim}), rh = host_tensor(res, {rows, dim});
          Tensor ref = Tensor::empty_host(DType::kF32, {rows, dim});
          cpu->rms_norm(xh, with_res ? &rh : nullptr, host_tensor(w, {dim}), ref, 1e-5f);
          const double tol = out_dt == DType::kBF16 ? kBf16Tol : 1e-5;
          std::vector<float> r(ref.data_as<float>(), ref.data_as<float>() + ref.numel());
          EXPECT_LT(rel_l2(to_host(*gpu, out), r), tol)
              << "dim " << dim << " rows " << rows << " res " << with_res;
          if (with_res) {
            std::vector<float> rr(rh.data_as<float>(), rh.data_as<float>() + rh.numel());
            EXPECT_LT(rel_l2(to_host(*gpu, rg), rr), 1e-6);
          }
        }
      }
    }
  }
}

TEST(CudaOps, LinearWithAndWithoutBias) {
  MACSERVE_REQUIRE_CUDA(gpu);
  auto cpu = backend::make_cpu_backend();
  struct Shape {
    int64_t m, n, k;
  };
  // m = 1 with k a multiple of 8 takes linear_gemv (n odd, k of a few chunks, the 8B model's
  // down_proj); the rest cuBLAS.
  for (Shape s : {Shape{1, 576, 576}, Shape{7, 1536, 576}, Shape{64, 4096, 4096},
                  Shape{33, 100, 64}, Shape{300, 512, 256}, Shape{1, 1001, 264}, Shape{1, 7, 8},
                  Shape{1, 4096, 14336}, Shape{1, 33, 172}}) {
    for (bool with_bias : {false, true}) {
      const uint64_t seed = s.m * 1000 + s.n + with_bias;
      const auto x = round_bf16(randn(s.m * s.k, seed)),
                 w = round_bf16(randn(s.n * s.k, seed + 1, 0.05f));
      const auto b = round_bf16(randn(s.n, seed + 2));
      Tensor y = gpu->alloc(DType::kF32, {s.m, s.n});
      poison(*gpu, y);
      Tensor bg = gpu->upload_weight(host_tensor(b, {s.n}));
      gpu->linear(to_device(*gpu, x, DType::kBF16, {s.m, s.k}),
                  gpu->upload_weight(host_tensor(w, {s.n, s.k})), with_bias ? &bg : nullptr, y);
      Tensor bh = host_tensor(b, {s.n});
      Tensor ref = Tensor::empty_host(DType::kF32, {s.m, s.n});
      cpu->linear(host_tensor(x, {s.m, s.k}), host_tensor(w, {s.n, s.k}), with_bias ? &bh : nullptr,
                  ref);
      std::vector<float> r(ref.data_as<float>(), ref.data_as<float>() + ref.numel());
      EXPECT_LT(rel_l2(to_host(*gpu, y), r), 1e-4)
          << s.m << "x" << s.n << "x" << s.k << " bias " << with_bias;
    }
  }
}

// Rows of x computed as a batch of m (at an offset into a 2048-row chunk) against the same rows in
// the 2048-row chunk: how many rows differ in any bit, and the rel. L2 of rows 0-3 of the chunk
// against the CPU oracle. Shapes: the 8B model's fused QKV and down projection, k = 264 (a last
// half k16 step), k = 172 (not a multiple of 8: the scalar path).
struct RowInvariance {
  int64_t differing_rows = 0, compared_rows = 0;
  double worst_rel_l2 = 0.0;
};
RowInvariance linear_rows_vs_chunk(backend::Backend& gpu, int64_t n, int64_t k) {
  const int64_t M = 2048;
  const auto x = round_bf16(randn(static_cast<std::size_t>(M * k), n + k));
  const auto wv = round_bf16(randn(static_cast<std::size_t>(n * k), n + k + 1, 0.05f));
  const Tensor w = gpu.upload_weight(host_tensor(wv, {n, k}));
  auto run = [&](int64_t first, int64_t m) {
    const std::vector<float> xs(x.begin() + first * k, x.begin() + (first + m) * k);
    Tensor y = gpu.alloc(DType::kF32, {m, n});
    poison(gpu, y);
    gpu.linear(to_device(gpu, xs, DType::kBF16, {m, k}), w, nullptr, y);
    return to_host(gpu, y);
  };
  const std::vector<float> chunk = run(0, M);
  RowInvariance r;
  for (int64_t m : {1, 2, 5, 16, 17, 33, 64, 65, 300}) {
    const int64_t first = (m * 37 + 11) % (M - m);
    const std::vector<float> got = run(first, m);
    for (int64_t i = 0; i < m; ++i) {
      r.differing_rows += std::memcmp(got.data() + i * n, chunk.data() + (first + i) * n,
                                      static_cast<std::size_t>(n) * sizeof(float)) != 0;
      ++r.compared_rows;
    }
  }
  auto cpu = backend::make_cpu_backend();
  const int64_t rows = 4;
  Tensor ref = Tensor::empty_host(DType::kF32, {rows, n});
  cpu->linear(host_tensor(std::vector<float>(x.begin(), x.begin() + rows * k), {rows, k}),
              host_tensor(wv, {n, k}), nullptr, ref);
  r.worst_rel_l2 =
      rel_l2(std::vector<float>(chunk.begin(), chunk.begin() + rows * n),
             std::vector<float>(ref.data_as<float>(), ref.data_as<float>() + rows * n));
  return r;
}

// A CUDA backend with --deterministic; a test fails if none can be made where a device is.
std::unique_ptr<backend::Backend> deterministic_cuda_backend() {
  std::string why;
  auto be = backend::make_cuda_backend(&why, deterministic_options());
  EXPECT_TRUE(be) << why;
  return be;
}

// --deterministic's fixed-order GEMM (linear.cuh): a row's bits do not depend on how many rows
// share the launch or where it sits among them. On Hopper the rows compared run on both of its
// kernels: mma.sync up to 64 rows, wgmma for the chunk and from 65 rows, and from 32 rows for the
// wide n = 32768 (whose two-consumer tiles fill the GPU).
TEST(CudaOps, DeterministicLinearRowsAreBatchInvariant) {
  MACSERVE_REQUIRE_CUDA(probe);
  auto gpu = deterministic_cuda_backend();
  ASSERT_TRUE(gpu);
  for (auto [n, k] : {std::pair<int64_t, int64_t>{6144, 4096},
                      {4096, 14336},
                      {1000, 264},
                      {100, 172},
                      {32768, 264}}) {
    const RowInvariance r = linear_rows_vs_chunk(*gpu, n, k);
    std::printf("deterministic n %lld k %lld: %lld of %lld rows differ, rel L2 %.2e\n",
                static_cast<long long>(n), static_cast<long long>(k),
                static_cast<long long>(r.differing_rows), static_cast<long long>(r.compared_rows),
                r.worst_rel_l2);
    EXPECT_EQ(r.differing_rows, 0) << n << " x " << k;
    EXPECT_LT(r.worst_rel_l2, 1e-5) << n << " x " << k;
  }
}

// CudaBackend's linear at m = 1 (linear_gemv): each row alone within f32 rounding of the CPU
// oracle, for the 8B model's shapes and edge cases (n odd, k of one chunk).
TEST(CudaOps, GemvRowsMatchTheOracle) {
  MACSERVE_REQUIRE_CUDA(gpu);
  auto cpu = backend::make_cpu_backend();
  const int64_t M = 4;
  for (const auto& shape :
       {std::pair<int64_t, int64_t>{6144, 4096}, {4096, 14336}, {1001, 264}, {7, 8}}) {
    const int64_t n = shape.first, k = shape.second;
    const auto x = round_bf16(randn(static_cast<std::size_t>(M * k), n + k));
    const auto wv = round_bf16(randn(static_cast<std::size_t>(n * k), n + k + 1, 0.05f));
    const Tensor w = gpu->upload_weight(host_tensor(wv, {n, k}));
    std::vector<float> got;
    for (int64_t i = 0; i < M; ++i) {
      const std::vector<float> xi(x.begin() + i * k, x.begin() + (i + 1) * k);
      Tensor y = gpu->alloc(DType::kF32, {1, n});
      poison(*gpu, y);
      gpu->linear(to_device(*gpu, xi, DType::kBF16, {1, k}), w, nullptr, y);
      const std::vector<float> row = to_host(*gpu, y);
      got.insert(got.end(), row.begin(), row.end());
    }
    Tensor ref = Tensor::empty_host(DType::kF32, {M, n});
    cpu->linear(host_tensor(x, {M, k}), host_tensor(wv, {n, k}), nullptr, ref);
    EXPECT_LT(rel_l2(got, std::vector<float>(ref.data_as<float>(), ref.data_as<float>() + M * n)),
              1e-5)
        << n << " x " << k;
  }
}

// The gate/up projection with SwiGLU in linear_gemv's epilogue (CudaBackend::linear_swiglu at
// m = 1) gives the bits of the projection and the swiglu kernel run apart, bf16 and f32
// activations; m = 2 takes cuBLAS and the swiglu kernel in both.
TEST(CudaOps, GemvSwigluEqualsLinearThenSwiglu) {
  MACSERVE_REQUIRE_CUDA(gpu);
  const int64_t inter = 1000, k = 264;
  const auto wv = round_bf16(randn(static_cast<std::size_t>(2 * inter * k), 3, 0.05f));
  const Tensor w = gpu->upload_weight(host_tensor(wv, {2 * inter, k}));
  for (int64_t m = 1; m <= 2; ++m)
    for (DType act_dtype : {DType::kBF16, DType::kF32}) {
      const Tensor x = to_device(*gpu, round_bf16(randn(static_cast<std::size_t>(m * k), 40 + m)),
                                 DType::kBF16, {m, k});
      Tensor gate_up = gpu->alloc(DType::kF32, {m, 2 * inter});
      Tensor apart = gpu->alloc(act_dtype, {m, inter}), fused = gpu->alloc(act_dtype, {m, inter});
      poison(*gpu, apart);
      poison(*gpu, fused);
      gpu->linear(x, w, nullptr, gate_up);
      gpu->swiglu(gate_up, apart);
      gpu->linear_swiglu(x, w, gate_up, fused);
      EXPECT_EQ(to_host(*gpu, fused), to_host(*gpu, apart))
          << "m " << m << (act_dtype == DType::kBF16 ? " bf16" : " f32");
    }
}

// The default path (linear_gemv at m = 1, else cuBLAS, whose kernel depends on m) is not
// batch-invariant: the reason --deterministic exists. Asserted so that a default path that became
// invariant (making the flag's GEMM cost needless) shows.
TEST(CudaOps, DefaultLinearRowsDependOnTheBatch) {
  MACSERVE_REQUIRE_CUDA(gpu);
  int64_t differing = 0;
  for (auto [n, k] : {std::pair<int64_t, int64_t>{6144, 4096}, {4096, 14336}}) {
    const RowInvariance r = linear_rows_vs_chunk(*gpu, n, k);
    std::printf("default n %lld k %lld: %lld of %lld rows differ, rel L2 %.2e\n",
                static_cast<long long>(n), static_cast<long long>(k),
                static_cast<long long>(r.differing_rows), static_cast<long long>(r.compared_rows),
                r.worst_rel_l2);
    EXPECT_LT(r.worst_rel_l2, 1e-4) << n << " x " << k;
    differing += r.differing_rows;
  }
  EXPECT_GT(differing, 0) << "cuBLAS gave every row the same bits at every batch size";
}

TEST(CudaOps, RopeLlama3AtLongPositions) {
  MACSERVE_REQUIRE_CUDA(gpu);
  auto cpu = backend::make_cpu_backend();
  for (int64_t D : {32, 64, 128}) {
    for (int64_t T : {1, 9, 40}) {
      const int64_t Hq = 8, Hkv = 2;
      std::vector<float> freq(D / 2);
      kernels::cpu::rope_inv_freq(
          {D, 500000.0f, kernels::RopeScalingType::kLlama3, 8.0f, 1.0f, 4.0f, 8192}, freq.data());
      std::vector<int32_t> pos(T);
      std::mt19937 rng(static_cast<uint32_t>(D + T));
      for (auto& p : pos) p = static_cast<int32_t>(rng() % 131072);
      const auto q = randn(T * Hq * D, D + T), k = randn(T * Hkv * D, D + T + 1);
      Tensor qg = to_device(*gpu, q, DType::kF32, {T, Hq, D}),
             kg = to_device(*gpu, k, DType::kF32, {T, Hkv, D});
      gpu->rope(qg, kg, to_device_raw(*gpu, pos, DType::kI32),
                to_device(*gpu, freq, DType::kF32, {D / 2}));
      Tensor qh = host_tensor(q, {T, Hq, D}), kh = host_tensor(k, {T, Hkv, D});
      Tensor ph = Tensor::empty_host(DType::kI32, {T});
      std::copy(pos.begin(), pos.end(), ph.data_as<int32_t>());
      cpu->rope(qh, kh, ph, host_tensor(freq, {D / 2}));
      std::vector<float> qr(qh.data_as<float>(), qh.data_as<float>() + qh.numel());
      std::vector<float> kr(kh.data_as<float>(), kh.data_as<float>() + kh.numel());
      EXPECT_LT(rel_l2(to_host(*gpu, qg), qr), 1e-5) << "D " << D << " T " << T;
      EXPECT_LT(rel_l2(to_host(*gpu, kg), kr), 1e-5) << "D " << D << " T " << T;
    }
  }
}

TEST(CudaOps, SwigluAndAdd) {
  MACSERVE_REQUIRE_CUDA(gpu);
  auto cpu = backend::make_cpu_backend();
  for (int64_t inter : {768, 1536, 14336}) {
    for (int64_t T : {1, 17}) {
      const auto gu = randn(T * 2 * inter, inter + T, 2.0f);
      Tensor out = gpu->alloc(DType::kBF16, {T, inter});
      poison(*gpu, out);
      gpu->swiglu(to_device(*gpu, gu, DType::kF32, {T, 2 * inter}), out);
      Tensor ref = Tensor::empty_host(DType::kF32, {T, inter});
      cpu->swiglu(host_tensor(gu, {T, 2 * inter}), ref);
      std::vector<float> r(ref.data_as<float>(), ref.data_as<float>() + ref.numel());
      EXPECT_LT(rel_l2(to_host(*gpu, out), r), kBf16Tol) << "inter " << inter << " T " << T;

      const auto a = randn(T * inter, inter + T + 5), b = randn(T * inter, inter + T + 6);
      Tensor sum = gpu->alloc(DType::kF32, {T, inter});
      poison(*gpu, sum);
      gpu->add(to_device(*gpu, a, DType::kF32, {T, inter}),
               to_device(*gpu, b, DType::kF32, {T, inter}), sum);
      std::vector<float> s(a.size());
      for (std::size_t i = 0; i < a.size(); ++i) s[i] = a[i] + b[i];
      EXPECT_EQ(rel_l2(to_host(*gpu, sum), s), 0.0);
    }
  }
}

TEST(CudaOps, KvWriteScattersIntoThePagedCache) {
  MACSERVE_REQUIRE_CUDA(gpu);
  for (int64_t D : {64, 128}) {
    const int64_t T = 37, Hkv = 4, bs = 16, num_blocks = 9;
    const kernels::PagedKvLayout layout{num_blocks, Hkv, bs, D};
    std::vector<int64_t> slots(num_blocks * bs);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), std::mt19937(static_cast<uint32_t>(D)));
    slots.resize(T);
    slots[5] = -1;  // padding token: not written
    const auto k = randn(T * Hkv * D, D), v = randn(T * Hkv * D, D + 1);
    const std::vector<int64_t> shape{num_blocks, Hkv, bs, D};
    Tensor kc = gpu->alloc(DType::kBF16, shape), vc = gpu->alloc(DType::kBF16, shape);
    backend::cuda_fill_uniform(*gpu, kc, 11, 1.0f);
    backend::cuda_fill_uniform(*gpu, vc, 12, 1.0f);
    auto kref = to_host(*gpu, kc), vref = to_host(*gpu, vc);
    backend::AttentionMeta meta;
    meta.slot_mapping = to_device_raw(*gpu, slots, DType::kI64);
    gpu->kv_write(to_device(*gpu, k, DType::kF32, {T, Hkv, D}),
                  to_device(*gpu, v, DType::kF32, {T, Hkv, D}), kc, vc, meta, layout);
    for (int64_t t = 0; t < T; ++t) {
      if (slots[t] < 0) continue;
      for (int64_t h = 0; h < Hkv; ++h)
        for (int64_t d = 0; d < D; ++d) {
          kref[layout.offset(slots[t], h) + d] =
              bf16_to_float(float_to_bf16(k[(t * Hkv + h) * D + d]));
          vref[layout.offset(slots[t], h) + d] =
              bf16_to_float(float_to_bf16(v[(t * Hkv + h) * D + d]));
        }
    }
    EXPECT_EQ(rel_l2(to_host(*gpu, kc), kref), 0.0);
    EXPECT_EQ(rel_l2(to_host(*gpu, vc), vref), 0.0);
  }
}

// The fused attention prologue on [q | k | v] rows against the CPU oracle run as the decoder ran
// before the Q/K/V GEMMs were fused: split buffers, Qwen3's per-head rms_norm of q and k, the q_pre
// copy, rope, kv_write. Llama-like, GQA and Qwen3-like shapes (head_dim 128 with Hq * D != hidden,
// with the norm), a padding token (slot -1), q_pre in f32 and bf16; q and q_pre poisoned first,
// qkv must stay as it was, and the cache outside this step's slots untouched.
TEST(CudaOps, FusedRopeKvWriteMatchesSeparateOps) {
  MACSERVE_REQUIRE_CUDA(gpu);
  auto cpu = backend::make_cpu_backend();
  struct Shape {
    int64_t T, Hq, Hkv, D;
    bool pre_bf16, norm;
  };
  for (const Shape& sh : {Shape{1, 9, 3, 64, false, false}, Shape{37, 8, 2, 64, true, false},
                          Shape{70, 32, 8, 128, false, false}, Shape{5, 16, 8, 128, true, true},
                          Shape{33, 32, 4, 128, false, true}, Shape{1, 32, 8, 128, false, true},
                          Shape{12, 14, 2, 64, true, true}}) {
    const int64_t T = sh.T, Hq = sh.Hq, Hkv = sh.Hkv, D = sh.D, bs = 16;
    const int64_t width = (Hq + 2 * Hkv) * D;
    const int64_t num_blocks = (T + 2 * bs) / bs + 1;
    const kernels::PagedKvLayout layout{num_blocks, Hkv, bs, D};
    std::vector<float> freq(D / 2);
    kernels::cpu::rope_inv_freq(
        {D, 1000000.0f, kernels::RopeScalingType::kNone, 1.0f, 1.0f, 1.0f, 0}, freq.data());
    std::mt19937 rng(static_cast<uint32_t>(T * 131 + D + sh.norm));
    std::vector<int32_t> pos(T);
    for (auto& p : pos) p = static_cast<int32_t>(rng() % 40000);
    std::vector<int64_t> slots(num_blocks * bs);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    slots.resize(T);
    if (T > 3) slots[T / 2] = -1;  // padding row: no KV write
    const auto qkv = randn(T * width, T + 1, 2.0f);
    const auto qn = round_bf16(randn(D, T + 4, 0.5f)), kn = round_bf16(randn(D, T + 5, 0.5f));
    const std::vector<int64_t> cshape{num_blocks, Hkv, bs, D};
    Tensor kc = gpu->alloc(DType::kBF16, cshape), vc = gpu->alloc(DType::kBF16, cshape);
    backend::cuda_fill_uniform(*gpu, kc, 21, 1.0f);
    backend::cuda_fill_uniform(*gpu, vc, 22, 1.0f);
    const auto kc0 = to_host(*gpu, kc), vc0 = to_host(*gpu, vc);
    Tensor qkvg = to_device(*gpu, qkv, DType::kF32, {T, width});
    Tensor qg = gpu->alloc(DType::kF32, {T, Hq, D});
    Tensor qpre = gpu->alloc(sh.pre_bf16 ? DType::kBF16 : DType::kF32, {T, Hq, D});
    poison(*gpu, qg);
    poison(*gpu, qpre);
    Tensor qng = gpu->upload_weight(host_tensor(qn, {D})),
           kng = gpu->upload_weight(host_tensor(kn, {D}));
    const backend::Backend::QkNorm gnorm{&qng, &kng, 1e-6f};
    backend::AttentionMeta meta;
    meta.slot_mapping = to_device_raw(*gpu, slots, DType::kI64);
    gpu->rope_kv_write(qkvg, qg, &qpre, sh.norm ? &gnorm : nullptr,
                       to_device_raw(*gpu, pos, DType::kI32),
                       to_device(*gpu, freq, DType::kF32, {D / 2}), kc, vc, meta, layout);
    // CPU oracle: the separate steps in float32 on split buffers.
    std::vector<float> q(T * Hq * D), k(T * Hkv * D), v(T * Hkv * D);
    for (int64_t t = 0; t < T; ++t) {
      const float* row = qkv.data() + t * width;
      std::copy(row, row + Hq * D, q.begin() + t * Hq * D);
      std::copy(row + Hq * D, row + (Hq + Hkv) * D, k.begin() + t * Hkv * D);
      std::copy(row + (Hq + Hkv) * D, row + width, v.begin() + t * Hkv * D);
    }
    Tensor qh = host_tensor(q, {T, Hq, D}), kh = host_tensor(k, {T, Hkv, D}),
           vh = host_tensor(v, {T, Hkv, D});
    if (sh.norm) {
      cpu->rms_norm(qh, nullptr, host_tensor(qn, {D}), qh, 1e-6f);
      cpu->rms_norm(kh, nullptr, host_tensor(kn, {D}), kh, 1e-6f);
    }
    auto vec = [](const Tensor& t) {
      return std::vector<float>(t.data_as<float>(), t.data_as<float>() + t.numel());
    };
    const auto pre_f32 = vec(qh);
    Tensor ph = Tensor::empty_host(DType::kI32, {T});
    std::copy(pos.begin(), pos.end(), ph.data_as<int32_t>());
    cpu->rope(qh, kh, ph, host_tensor(freq, {D / 2}));
    Tensor kch = host_tensor(kc0, cshape), vch = host_tensor(vc0, cshape);
    Tensor sh_h = Tensor::empty_host(DType::kI64, {T});
    std::copy(slots.begin(), slots.end(), sh_h.data_as<int64_t>());
    backend::AttentionMeta hmeta;
    hmeta.slot_mapping = sh_h;
    cpu->kv_write(kh, vh, kch, vch, hmeta, layout);
    const std::string what = "T " + std::to_string(T) + " Hq " + std::to_string(Hq) + " Hkv " +
                             std::to_string(Hkv) + " D " + std::to_string(D) + " norm " +
                             std::to_string(sh.norm);
    EXPECT_LT(rel_l2(to_host(*gpu, qg), vec(qh)), 1e-5) << what;
    // q_pre: a copy of the input rows (bit-equal after the bf16 rounding), or of the normed ones.
    const auto pre_ref = sh.pre_bf16 ? round_bf16(pre_f32) : pre_f32;
    if (sh.norm)
      EXPECT_LT(rel_l2(to_host(*gpu, qpre), pre_ref), sh.pre_bf16 ? kBf16Tol : 1e-5) << what;
    else
      EXPECT_EQ(rel_l2(to_host(*gpu, qpre), pre_ref), 0.0) << what;
    EXPECT_EQ(rel_l2(to_host(*gpu, qkvg), qkv), 0.0) << what << ": qkv is only read";
    // The cache: bf16 of the CPU's f32 result; untouched slots (and the padding row's) bit-equal.
    auto kref = round_bf16(vec(kch)), vref = round_bf16(vec(vch));
    const auto kgot = to_host(*gpu, kc), vgot = to_host(*gpu, vc);
    EXPECT_LT(rel_l2(kgot, kref), 2e-3) << what;
    EXPECT_EQ(rel_l2(vgot, vref), 0.0) << what;
    std::vector<bool> written(kgot.size(), false);
    for (int64_t t = 0; t < T; ++t)
      if (slots[t] >= 0)
        for (int64_t h = 0; h < Hkv; ++h)
          for (int64_t d = 0; d < D; ++d) written[layout.offset(slots[t], h) + d] = true;
    int64_t changed_outside = 0;
    for (std::size_t i = 0; i < kgot.size(); ++i)
      if (!written[i] && (kgot[i] != kc0[i] || vgot[i] != vc0[i])) ++changed_outside;
    EXPECT_EQ(changed_outside, 0) << what;
  }
}

TEST(CudaOps, GatherRows) {
  MACSERVE_REQUIRE_CUDA(gpu);
  const int64_t rows = 20, width = 576;
  const auto x = round_bf16(randn(rows * width, 5));
  const std::vector<int32_t> idx{19, 0, 7, 7, 3};
  Tensor out = gpu->alloc(DType::kBF16, {5, width});
  poison(*gpu, out);
  gpu->gather_rows(to_device(*gpu, x, DType::kBF16, {rows, width}),
                   to_device_raw(*gpu, idx, DType::kI32), out);
  std::vector<float> ref;
  for (int32_t r : idx) ref.insert(ref.end(), x.begin() + r * width, x.begin() + (r + 1) * width);
  EXPECT_EQ(rel_l2(to_host(*gpu, out), ref), 0.0);
}

// Greedy sampling on the device: the CPU backend's argmax (std::max_element: lowest index among
// equal maxima) on the same f32 logits, for vocabularies of several sizes, with planted ties and
// rows of -inf.
TEST(CudaOps, ArgmaxRowsMatchesTheCpuSampler) {
  MACSERVE_REQUIRE_CUDA(gpu);
  auto cpu = backend::make_cpu_backend();
  for (int64_t vocab :
       {int64_t{1}, int64_t{7}, int64_t{513}, int64_t{32000}, int64_t{128256}, int64_t{151936}}) {
    const int64_t rows = 67;
    std::vector<float> x =
        randn(static_cast<std::size_t>(rows * vocab), static_cast<uint64_t>(vocab));
    for (int64_t r = 0; r < rows; ++r) {
      float* row = x.data() + r * vocab;
      if (r % 5 == 1 && vocab > 3)
        row[vocab - 1] = row[vocab / 2] = row[1] = 50.0f;      // tie: lowest index wins
      if (r % 7 == 2) std::fill(row, row + vocab, -INFINITY);  // all -inf: index 0
    }
    Tensor host_logits = Tensor::empty_host(DType::kF32, {rows, vocab});
    std::copy(x.begin(), x.end(), host_logits.data_as<float>());
    Tensor want = cpu->alloc(DType::kI32, {rows});
    cpu->argmax_rows(host_logits, want);
    Tensor out = gpu->alloc(DType::kI32, {rows});
    poison(*gpu, out);
    gpu->argmax_rows(to_device(*gpu, x, DType::kF32, {rows, vocab}), out);
    std::vector<int32_t> got(static_cast<std::size_t>(rows));
    gpu->copy_to_host(out, got.data());
    for (int64_t r = 0; r < rows; ++r)
      EXPECT_EQ(got[static_cast<std::size_t>(r)], want.data_as<int32_t>()[r])
          << "vocab " << vocab << " row " << r;
  }
}

// The general kernel: prefill chunks (queries at the end of longer contexts), mixed with decodes,
// odd head_dim / group / block sizes.
TEST(CudaOps, PagedAttentionGeneralPrefillAndMixed) {
  MACSERVE_REQUIRE_CUDA(gpu);
  struct Shape {
    int64_t hq, hkv, d, bs;
  };
  for (Shape sh : {Shape{8, 4, 32, 16}, Shape{9, 3, 64, 16}, Shape{32, 8, 128, 16},
                   Shape{8, 8, 64, 8}, Shape{16, 2, 128, 32}}) {
    AttentionCase c;
    c.num_q_heads = sh.hq;
    c.num_kv_heads = sh.hkv;
    c.head_dim = sh.d;
    c.block_size = sh.bs;
    c.num_queries = {1, 40, 17, 1, 64};
    c.context_lens = {1, 40, 100, 333, 64};
    c.seed = static_cast<uint64_t>(sh.hq * 100 + sh.d);
    const AttentionResult r = run_attention_case(*gpu, c);
    EXPECT_LT(r.rel, kBf16Tol) << "Hq " << sh.hq << " Hkv " << sh.hkv << " D " << sh.d << " bs "
                               << sh.bs;
  }
}

// The flash prefill kernel (every non-decode step with head_dim 64/128 and group <= 8): prefill
// chunks of 1, 7, 16, 100 and 1000 queries, each after prior context (chunked prefill), in one
// step, for group sizes 1-8 and head_dim 64/128 (max_query_len 0 sends the chunk of 1 there too).
TEST(CudaOps, FlashPrefillChunksWithPriorContext) {
  MACSERVE_REQUIRE_CUDA(gpu);
  for (int64_t D : {64, 128}) {
    for (int64_t G : {1, 2, 3, 4, 5, 8}) {
      AttentionCase c;
      c.num_kv_heads = 2;
      c.num_q_heads = 2 * G;
      c.head_dim = D;
      c.num_queries = {1, 7, 16, 100, 1000};
      c.context_lens = {301, 57, 16, 1100, 1500};
      c.seed = static_cast<uint64_t>(D * 10 + G);
      c.max_query_len = 0;
      const AttentionResult r = run_attention_case(*gpu, c);
      EXPECT_LT(r.rel, kBf16Tol) << "G " << G << " D " << D;
      std::printf("flash prefill G %lld D %lld: rel_l2 %.2e\n", static_cast<long long>(G),
                  static_cast<long long>(D), r.rel);
    }
  }
  // Only chunks of one query each (a step of single-token prefills), block size 32.
  AttentionCase c;
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  c.block_size = 32;
  c.num_queries = {1, 1, 1};
  c.context_lens = {1, 77, 1000};
  c.max_query_len = 0;
  EXPECT_LT(run_attention_case(*gpu, c).rel, kBf16Tol);
  // Block sizes at the edges of the Hopper kernel's page gathers (8: the smallest it takes; 256:
  // pages larger than its 128-key tiles) and below them (4: the mma.sync kernel on every GPU).
  for (int64_t bs : {4, 8, 256}) {
    for (int64_t D : {64, 128}) {
      AttentionCase b;
      b.num_q_heads = 8;
      b.num_kv_heads = 2;
      b.head_dim = D;
      b.block_size = bs;
      b.num_queries = {3, 200, 130};
      b.context_lens = {40, 700, 130};
      b.seed = static_cast<uint64_t>(bs + D);
      b.max_query_len = 0;
      b.f32_check = true;
      const AttentionResult r = run_attention_case(*gpu, b);
      EXPECT_LT(r.rel, kBf16Tol) << "block size " << bs << " D " << D;
      EXPECT_LT(r.rel_f32, kBf16Tol) << "block size " << bs << " D " << D;
      std::printf("flash prefill block size %lld D %lld (%s): rel_l2 %.2e\n",
                  static_cast<long long>(bs), static_cast<long long>(D),
                  kernels::cuda::prefill_wgmma_supported(D, 4, bs) ? "wgmma" : "mma.sync", r.rel);
    }
  }
}

// Long-context chunks on the flash prefill kernel: a 2048-query chunk after 14,000 prior tokens
// and a 700-query chunk after 9,000 beside it (Llama-3.1-8B's heads: Hq 32, Hkv 8, head_dim 128),
// then Hkv 4 with a 1,500-query chunk after 20,000; bf16 and f32 outputs against the CPU oracle,
// and two more f32 runs bit for bit equal to the first.
TEST(CudaOps, FlashPrefillLongContext) {
  MACSERVE_REQUIRE_CUDA(gpu);
  for (int64_t hkv : {8, 4}) {
    AttentionCase c;
    c.num_q_heads = 32;
    c.num_kv_heads = hkv;
    c.head_dim = 128;
    c.num_queries = hkv == 8 ? std::vector<int32_t>{2048, 700} : std::vector<int32_t>{1500};
    c.context_lens = hkv == 8 ? std::vector<int32_t>{16048, 9700} : std::vector<int32_t>{21500};
    c.seed = static_cast<uint64_t>(hkv);
    c.f32_check = true;
    c.repeats = 2;
    const AttentionResult r = run_attention_case(*gpu, c);
    EXPECT_LT(r.rel, kBf16Tol) << "Hkv " << hkv;
    EXPECT_LT(r.rel_f32, kBf16Tol) << "Hkv " << hkv;
    EXPECT_EQ(r.repeat_mismatches, 0) << "Hkv " << hkv;
    std::printf("flash prefill long context Hkv %lld: rel_l2 bf16 out %.2e, f32 out %.2e\n",
                static_cast<long long>(hkv), r.rel, r.rel_f32);
  }
}

// Rows of one prompt computed in different steps: each step is a list of chunks [begin, end) of
// sequence 0 (the prompt, N tokens) or 1 (another one), and returns the f32 output rows of
// sequence 0's chunks in order. The cache is filled once; a step reads it (queries are the
// prompt's fixed rows), so steps are independent of each other.
class PromptRows {
 public:
  struct Chunk {
    int64_t seq, begin, end;
  };
  PromptRows(backend::Backend& be, int64_t G, int64_t D, int64_t N, int64_t other)
      : be_(be), Hq_(2 * G), D_(D), N_(N), layout_{0, 2, 16, D} {
    const int64_t bs = layout_.block_size, Hkv = layout_.num_kv_heads;
    const int64_t nb0 = (N + bs - 1) / bs, nb1 = (other + bs - 1) / bs;
    layout_.num_blocks = nb0 + nb1;
    kc_ = be.alloc(DType::kBF16, {layout_.num_blocks, Hkv, bs, D});
    vc_ = be.alloc(DType::kBF16, {layout_.num_blocks, Hkv, bs, D});
    backend::cuda_fill_uniform(be, kc_, 11 + G, 1.5f);
    backend::cuda_fill_uniform(be, vc_, 12 + G, 1.0f);
    // Sequence 0 takes the blocks in reverse order, the other one the blocks after them.
    max_blocks_ = std::max(nb0, nb1);
    tables_.assign(static_cast<std::size_t>(2 * max_blocks_), 0);
    for (int64_t b = 0; b < nb0; ++b) tables_[b] = static_cast<int32_t>(nb0 - 1 - b);
    for (int64_t b = 0; b < nb1; ++b) tables_[max_blocks_ + b] = static_cast<int32_t>(nb0 + b);
    q_ = randn(static_cast<std::size_t>((N + other) * Hq_ * D), 40 + G);
  }

  // max_query_len as the engine passes it: 0 (not known), or 1 for a decode-only step.
  std::vector<float> step(const std::vector<Chunk>& chunks, int64_t max_query_len = 0) {
    std::vector<int32_t> qs{0}, cl, tb;
    std::vector<float> qrows;
    int64_t rows = 0, max_ctx = 0;
    for (const Chunk& ch : chunks) {
      qs.push_back(static_cast<int32_t>(qs.back() + ch.end - ch.begin));
      cl.push_back(static_cast<int32_t>(ch.end));
      tb.insert(tb.end(), tables_.begin() + ch.seq * max_blocks_,
                tables_.begin() + (ch.seq + 1) * max_blocks_);
      rows += ch.end - ch.begin;
      max_ctx = std::max(max_ctx, ch.end);
      const int64_t first = (ch.seq == 0 ? 0 : N_) + ch.begin;
      qrows.insert(qrows.end(), q_.begin() + first * Hq_ * D_,
                   q_.begin() + (first + ch.end - ch.begin) * Hq_ * D_);
    }
    backend::AttentionMeta m;
    m.query_start = to_device_raw(be_, qs, DType::kI32);
    m.context_lens = to_device_raw(be_, cl, DType::kI32);
    m.block_tables = to_device_raw(be_, tb, DType::kI32);
    m.num_seqs = static_cast<int64_t>(chunks.size());
    m.max_blocks_per_seq = max_blocks_;
    m.max_query_len = max_query_len;
    m.max_context_len = max_ctx;
    Tensor qd = to_device(be_, qrows, DType::kF32, {rows, Hq_, D_});
    Tensor od = be_.alloc(DType::kF32, {rows, Hq_, D_});
    poison(be_, od);
    be_.paged_attention(qd, kc_, vc_, od, m, layout_, 1.0f / std::sqrt(static_cast<float>(D_)));
    const std::vector<float> all = to_host(be_, od);
    std::vector<float> ours;
    int64_t at = 0;
    for (const Chunk& ch : chunks) {
      const int64_t n = (ch.end - ch.begin) * Hq_ * D_;
      if (ch.seq == 0) ours.insert(ours.end(), all.begin() + at, all.begin() + at + n);
      at += n;
    }
    return ours;
  }
  // The prompt's rows in chunks of `lens`, one step each.
  std::vector<float> chunked(const std::vector<int64_t>& lens) {
    std::vector<float> out;
    int64_t at = 0;
    for (int64_t len : lens) {
      const std::vector<float> part = step({{0, at, at + len}});
      out.insert(out.end(), part.begin(), part.end());
      at += len;
    }
    EXPECT_EQ(at, N_);
    return out;
  }
  int64_t row_floats() const { return Hq_ * D_; }

 private:
  backend::Backend& be_;
  int64_t Hq_, D_, N_;
  kernels::PagedKvLayout layout_;
  Tensor kc_, vc_;
  int64_t max_blocks_ = 0;
  std::vector<int32_t> tables_;
  std::vector<float> q_;
};

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// A prefill row's result depends on its own query and keys only: a 300-token prompt computed as one
// chunk, as chunks of 1, 37, 64, 100 and 98 queries (each step attending to what the earlier chunks
// wrote), and as one chunk beside another sequence in the same step gives the same f32 bits in
// every row (the flash kernel's rows; --deterministic builds on it below).
TEST(CudaOps, FlashPrefillRowsAreChunkAndBatchInvariant) {
  MACSERVE_REQUIRE_CUDA(gpu);
  for (int64_t G : {1, 4, 6}) {
    const int64_t N = 300, other = 123;
    PromptRows pr(*gpu, G, 128, N, other);
    const std::vector<float> whole = pr.step({{0, 0, N}});
    EXPECT_TRUE(same_bits(whole, pr.chunked({1, 37, 64, 100, 98})))
        << "G " << G << ": chunked rows differ from the whole prompt's";
    EXPECT_TRUE(same_bits(whole, pr.step({{1, 0, other}, {0, 0, N}})))
        << "G " << G << ": rows beside another sequence differ";
    // Outputs start as NaN (poison): every row must have been written.
    EXPECT_TRUE(std::all_of(whole.begin(), whole.end(), [](float x) { return std::isfinite(x); }))
        << "G " << G;
  }
}

// --deterministic's attention (fixed 1024-key segments) against the CPU oracle: mixed steps with
// long prefill chunks and one-query rows (segment edges at 1023/1024/1025 keys), and decode-only
// steps up to 20,000 keys, with bf16 and f32 outputs; repeats bit for bit equal.
TEST(CudaOps, DeterministicAttentionMatchesTheOracle) {
  MACSERVE_REQUIRE_CUDA(probe);
  auto gpu = deterministic_cuda_backend();
  ASSERT_TRUE(gpu);
  struct Shape {
    int64_t hq, hkv, d;
  };
  for (Shape sh : {Shape{32, 8, 128}, Shape{16, 2, 64}, Shape{8, 8, 128}}) {
    for (bool decode : {false, true}) {
      AttentionCase c;
      c.num_q_heads = sh.hq;
      c.num_kv_heads = sh.hkv;
      c.head_dim = sh.d;
      c.num_queries = decode ? std::vector<int32_t>{1, 1, 1, 1, 1, 1}
                             : std::vector<int32_t>{1, 700, 1, 33, 1, 2000};
      c.context_lens = decode ? std::vector<int32_t>{1, 1023, 1024, 1025, 9000, 20000}
                              : std::vector<int32_t>{5000, 3100, 1, 1024, 1025, 2100};
      c.seed = static_cast<uint64_t>(sh.hq + sh.d + decode);
      c.f32_check = true;
      c.repeats = 2;
      const AttentionResult r = run_attention_case(*gpu, c);
      const std::string what = "Hq " + std::to_string(sh.hq) + " Hkv " + std::to_string(sh.hkv) +
                               " D " + std::to_string(sh.d) + (decode ? " decode" : " mixed");
      EXPECT_LT(r.rel, kBf16Tol) << what;
      EXPECT_LT(r.rel_f32, kBf16Tol) << what;
      EXPECT_EQ(r.repeat_mismatches, 0) << what;
      std::printf("deterministic attention %s: rel_l2 bf16 out %.2e, f32 out %.2e\n", what.c_str(),
                  r.rel, r.rel_f32);
    }
  }
  // 64 decode rows of 5,000-9,000 keys with Hkv 8: fewer segment slots than segments, so each
  // split CTA computes several segments in turn.
  AttentionCase c;
  c.num_q_heads = 32;
  c.num_kv_heads = 8;
  c.num_queries.assign(64, 1);
  for (int i = 0; i < 64; ++i) c.context_lens.push_back(5000 + 61 * i);
  c.f32_check = true;
  const AttentionResult r = run_attention_case(*gpu, c);
  EXPECT_LT(r.rel, kBf16Tol);
  EXPECT_LT(r.rel_f32, kBf16Tol);
  std::printf("deterministic attention, 64 decode rows: rel_l2 bf16 out %.2e, f32 out %.2e\n",
              r.rel, r.rel_f32);
}

// Under --deterministic a row's bits are the same however it is computed: a 2,600-token prompt
// (three key segments) as one chunk, in chunks of 1000/1/1/598/1000 (one-query chunks take the
// split path), beside another sequence, and row by row as decode steps beside another sequence's
// decode row (the split path and its combine) at the segment edges and elsewhere.
TEST(CudaOps, DeterministicAttentionRowsAreInvariant) {
  MACSERVE_REQUIRE_CUDA(probe);
  auto gpu = deterministic_cuda_backend();
  ASSERT_TRUE(gpu);
  struct Shape {
    int64_t g, d;
  };
  for (Shape sh : {Shape{1, 128}, Shape{4, 128}, Shape{8, 128}, Shape{4, 64}}) {
    const int64_t N = 2600, other = 1500;
    PromptRows pr(*gpu, sh.g, sh.d, N, other);
    const std::string what = "G " + std::to_string(sh.g) + " D " + std::to_string(sh.d);
    const std::vector<float> whole = pr.step({{0, 0, N}});
    EXPECT_TRUE(std::all_of(whole.begin(), whole.end(), [](float x) { return std::isfinite(x); }))
        << what;
    EXPECT_TRUE(same_bits(whole, pr.chunked({1000, 1, 1, 598, 1000})))
        << what << ": chunked rows differ from the whole prompt's";
    EXPECT_TRUE(same_bits(whole, pr.step({{1, 0, other}, {0, 0, N}})))
        << what << ": rows beside another sequence differ";
    const int64_t rf = pr.row_floats();
    int64_t differing = 0;
    for (int64_t i : {0, 1, 700, 1022, 1023, 1024, 1025, 2047, 2048, 2049, 2599}) {
      const std::vector<float> row = pr.step({{1, i % other, i % other + 1}, {0, i, i + 1}}, 1);
      const std::vector<float> want(whole.begin() + i * rf, whole.begin() + (i + 1) * rf);
      if (!same_bits(row, want)) {
        ++differing;
        ADD_FAILURE() << what << ": decode row " << i << " differs from the prompt's";
      }
    }
    // Among 1,100 other decode rows: one segment slot per (row, kv head), which walks them all.
    for (int64_t i : {1025, 2599}) {
      std::vector<PromptRows::Chunk> chunks;
      for (int64_t j = 0; j < 1100; ++j) chunks.push_back({1, j % other, j % other + 1});
      chunks.push_back({0, i, i + 1});
      const std::vector<float> want(whole.begin() + i * rf, whole.begin() + (i + 1) * rf);
      if (!same_bits(pr.step(chunks, 1), want)) {
        ++differing;
        ADD_FAILURE() << what << ": decode row " << i << " among 1,100 differs from the prompt's";
      }
    }
    std::printf("deterministic rows %s: %lld decode rows differ\n", what.c_str(),
                static_cast<long long>(differing));
  }
}

}  // namespace
}  // namespace macserve::testing
