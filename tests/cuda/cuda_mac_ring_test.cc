// MAC-Attention ring slots through the engine on the GPU (the CPU twin is mac_engine_test.cc; the
// checks are shared, models/mac_ring_checks.h): requests MAC cannot act on give full attention's
// tokens and take no ring slot, also in steps that mix plain rows with MAC rows (the paged kernels
// skip the MAC decode rows, the MAC kernels leave the plain rows alone); an exhausted pool falls
// back to exact attention; finish and preemption give every slot back. Graphs stay on, so mixed
// plain/MAC decode steps replay too. Skips without a GPU (CI).
#include <cstdlib>

#include "cuda_test_util.h"
#include "macserve/engine/engine.h"
#include "models/mac_ring_checks.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

class CudaMacRings : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    MACSERVE_REQUIRE_CUDA(probe);
    if (!exists(dir())) GTEST_SKIP() << "test model not found: " << dir();
  }
  std::string dir() const { return models_dir() + "/" + GetParam(); }
  // The model on the GPU (or on the CPU with MACSERVE_TEST_CPU_AS_GPU, for host-side debugging),
  // with MAC settings scaled to the tiny models.
  engine::EngineConfig config() const {
    engine::EngineConfig c;
    c.model_path = dir();
    c.device = std::getenv("MACSERVE_TEST_CPU_AS_GPU") != nullptr ? engine::DeviceChoice::kCpu
                                                                  : engine::DeviceChoice::kCuda;
    c.attention = engine::AttentionMode::kMac;
    c.max_model_len = 512;
    c.kv_cache_tokens = 8192;
    c.max_num_seqs = 16;
    c.mac_window = 64;
    c.mac_band = 16;
    return c;
  }
};

TEST_P(CudaMacRings, ShortRequestsTakeThePlainPathAndNoRingSlot) {
  mac_rings::short_requests_run_plain(config(), /*bit_exact=*/false);
}

TEST_P(CudaMacRings, ExhaustedRingPoolFallsBackToExactAttention) {
  mac_rings::exhausted_pool_falls_back_to_exact(config(), /*bit_exact=*/false);
}

TEST_P(CudaMacRings, FinishAndPreemptionReturnRingSlots) {
  mac_rings::slots_return_after_storm(config());
}

INSTANTIATE_TEST_SUITE_P(Models, CudaMacRings,
                         ::testing::Values("tiny-llama-sp", "tiny-qwen2-bpe", "tiny-qwen3-bpe"),
                         [](const ::testing::TestParamInfo<std::string>& i) {
                           std::string n = i.param;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

}  // namespace
}  // namespace macserve::testing
