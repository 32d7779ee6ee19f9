// The split-KV decode kernel against the CPU oracle: batch {1,3,16,64} x context {1,15,16,17,1000,
// 32K,128K} x group {1,2,4,8} x head_dim {64,128}, random block tables. Long contexts use one KV
// head (the oracle's time and host memory grow with batch x context x heads); batches >= 3 make
// sequence 1 shorter (ctx / 2 + 1) so lengths are ragged. Each shape also runs with f32 outputs
// against the same oracle, where the error is the kernel's own (the tensor-core loop keeps fp32
// accuracy: 1e-4 would catch plain bf16 queries), then three more times, bit for bit equal to that
// run.
#include "attention_case.h"

namespace macserve::testing {
namespace {

class PagedDecode : public ::testing::TestWithParam<std::tuple<int, int>> {};

TEST_P(PagedDecode, MatchesCpuOracle) {
  MACSERVE_REQUIRE_CUDA(gpu);
  const auto [batch, ctx] = GetParam();
  for (int64_t D : {64, 128}) {
    for (int64_t G : {1, 2, 4, 8}) {
      AttentionCase c;
      c.num_kv_heads = ctx >= 32768 ? 1 : 2;
      c.num_q_heads = G * c.num_kv_heads;
      c.head_dim = D;
      c.num_queries.assign(batch, 1);
      c.context_lens.assign(batch, ctx);
      if (batch >= 3) c.context_lens[1] = ctx / 2 + 1;
      c.seed = static_cast<uint64_t>(batch * 1000003 + ctx * 31 + D * 7 + G);
      c.f32_check = true;
      c.repeats = 3;
      const AttentionResult r = run_attention_case(*gpu, c);
      EXPECT_LT(r.rel, kBf16Tol) << "batch " << batch << " ctx " << ctx << " D " << D << " G " << G;
      EXPECT_LT(r.rel_f32, 1e-4) << "f32 out, batch " << batch << " ctx " << ctx << " D " << D
                                 << " G " << G;
      EXPECT_EQ(r.repeat_mismatches, 0)
          << "batch " << batch << " ctx " << ctx << " D " << D << " G " << G;
      std::printf(
          "decode batch %d ctx %d D %lld G %lld rel_l2 %.3e (f32 out %.3e, repeats differing %d)\n",
          batch, ctx, static_cast<long long>(D), static_cast<long long>(G), r.rel, r.rel_f32,
          r.repeat_mismatches);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Grid, PagedDecode,
                         ::testing::Combine(::testing::Values(1, 3, 16, 64),
                                            ::testing::Values(1, 15, 16, 17, 1000, 32768, 131072)),
                         [](const auto& info) {
                           return "b" + std::to_string(std::get<0>(info.param)) + "_ctx" +
                                  std::to_string(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace macserve::testing
