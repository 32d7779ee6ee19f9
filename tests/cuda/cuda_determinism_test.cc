// Deterministic mode on the GPU (--deterministic, issue 25): the checks of the CPU engine_test
// (models/determinism_checks.h: the same token ids and logprob bits alone, in batches of 1-64
// beside random neighbours, under chunk budgets 256/2048/8192 and from the prefix cache) with
// device cuda, on the three tiny models, SmolLM2 (skipped where its file is absent) and the
// Llama-3.1-8B-shaped dummy model, each with full attention and MAC-Attention; and the proof that
// the flag does something: in the default mode the 8B dummy's logprobs depend on the batch and the
// chunk budget. Skips without a GPU (CI).
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tuple>

#include "cuda_test_util.h"
#include "macserve/engine/engine.h"
#include "models/determinism_checks.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

using engine::EngineConfig;

// The GPU, or the CPU with MACSERVE_TEST_CPU_AS_GPU (host-side debugging).
engine::DeviceChoice device() {
  return std::getenv("MACSERVE_TEST_CPU_AS_GPU") != nullptr ? engine::DeviceChoice::kCpu
                                                            : engine::DeviceChoice::kCuda;
}

// determinism::small_model_config on the GPU.
EngineConfig config(const std::string& model_path, const std::string& attention) {
  EngineConfig c = determinism::small_model_config(model_path, attention);
  c.device = device();
  return c;
}

// The Llama-3.1-8B shapes with random weights, and the Llama 3.1 tokenizer; empty after a skip
// message when either is absent.
std::string llama8b_dir(std::string* tokenizer, std::string* why) {
  const std::string dir = configs_dir() + "/llama-3.1-8b";
  *tokenizer = shared_dir() + "/tokenizers/llama3.1";
  if (!exists(dir + "/config.json"))
    *why = dir + " not found (run from the repo root or set MACSERVE_CONFIGS_DIR)";
  else if (!exists(*tokenizer + "/tokenizer.json"))
    *why = *tokenizer + " not found (set MACSERVE_SHARED_DIR)";
  return why->empty() ? dir : std::string();
}

EngineConfig llama8b_config(const std::string& dir, const std::string& tokenizer,
                            const std::string& attention) {
  EngineConfig c = config(dir, attention);
  c.load_format = engine::LoadFormat::kDummy;
  c.tokenizer_path = tokenizer;
  c.kv_cache_tokens = 65536;  // 8 GiB of bf16 K/V: room for a batch of 64
  c.mac_threshold = 0.0f;     // the widest radius: random weights match rarely otherwise
  return c;
}

// Fewer and shorter requests on the 8B model (each engine also fills 8B random weights).
determinism::Plan llama8b_plan() {
  determinism::Plan p;
  p.num_targets = 2;
  p.target_max_tokens = 16;
  p.neighbour_max_tokens = 16;
  return p;
}

std::string param_name(std::string n) {
  for (char& ch : n)
    if (ch == '-') ch = '_';
  return n;
}

// (model, attention) on the tiny models.
class CudaDeterminism : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(CudaDeterminism, AloneBatchedChunkedAndCachedGiveTheSameBits) {
  MACSERVE_REQUIRE_CUDA(probe);
  probe.reset();
  const auto& [model, attention] = GetParam();
  const std::string dir = models_dir() + "/" + model;
  if (!exists(dir)) GTEST_SKIP() << "test model not found: " << dir;
  determinism::check_invariance(config(dir, attention), determinism::Plan{});
}

INSTANTIATE_TEST_SUITE_P(
    Models, CudaDeterminism,
    ::testing::Combine(::testing::Values("tiny-llama-sp", "tiny-qwen2-bpe", "tiny-qwen3-bpe"),
                       ::testing::Values("full", "mac")),
    [](const ::testing::TestParamInfo<std::tuple<std::string, std::string>>& i) {
      return param_name(std::get<0>(i.param) + "_" + std::get<1>(i.param));
    });

// Parameter: the attention mode.
class CudaDeterminismSmolLM2 : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaDeterminismSmolLM2, AloneBatchedChunkedAndCachedGiveTheSameBits) {
  MACSERVE_REQUIRE_CUDA(probe);
  probe.reset();
  const std::string path = default_model_path();
  if (!exists(path))
    GTEST_SKIP() << "SmolLM2 not found: " << path
                 << " (scripts/fetch_default_model.sh, or set MACSERVE_DEFAULT_MODEL)";
  determinism::check_invariance(config(path, GetParam()), determinism::Plan{});
}

INSTANTIATE_TEST_SUITE_P(Attention, CudaDeterminismSmolLM2, ::testing::Values("full", "mac"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// Parameter: the attention mode.
class CudaDeterminismLlama8b : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaDeterminismLlama8b, AloneBatchedChunkedAndCachedGiveTheSameBits) {
  MACSERVE_REQUIRE_CUDA(probe);
  probe.reset();
  std::string tokenizer, why;
  const std::string dir = llama8b_dir(&tokenizer, &why);
  if (dir.empty()) GTEST_SKIP() << "8B dummy model: " << why;
  determinism::check_invariance(llama8b_config(dir, tokenizer, GetParam()), llama8b_plan());
}

INSTANTIATE_TEST_SUITE_P(Attention, CudaDeterminismLlama8b, ::testing::Values("full", "mac"),
                         [](const ::testing::TestParamInfo<std::string>& i) { return i.param; });

// Without --deterministic the same greedy request gives other logprob bits inside a batch of 64
// and under another chunk budget: cuBLAS picks its GEMM kernel (tile shape, split-K) by the row
// count M, so a row's sums run in another order as the batch or the chunk changes; the paged
// decode kernel splits the KV by the batch size; and a decode row that shares its step with a
// prefill chunk goes through the prefill kernel. If this ever passes without a difference, the
// invariance test above no longer shows that the flag does anything.
TEST(CudaDeterminismDefault, DefaultModeIsNotInvariant) {
  MACSERVE_REQUIRE_CUDA(probe);
  probe.reset();
  std::string tokenizer, why;
  const std::string dir = llama8b_dir(&tokenizer, &why);
  if (dir.empty()) GTEST_SKIP() << "8B dummy model: " << why;
  EngineConfig c = llama8b_config(dir, tokenizer, "full");
  c.deterministic = false;
  c.enable_prefix_caching = false;
  determinism::Plan plan = llama8b_plan();
  plan.num_targets = 1;  // greedy
  plan.target_max_tokens = 32;
  c.max_num_batched_tokens = 2048;
  auto eng = engine::Engine::create(c);
  const engine::Request target =
      determinism::make_targets(plan, determinism::prompt_vocab(*eng))[0];
  const determinism::Trace alone = determinism::run_alone(*eng, target);
  ASSERT_TRUE(alone.error.empty()) << alone.error;
  auto batch = determinism::make_neighbours(plan, 63, determinism::prompt_vocab(*eng), 5);
  batch.insert(batch.begin() + 21, target);
  const determinism::Diff in_batch =
      determinism::diff(determinism::run_batch(*eng, batch)[21], alone);
  eng.reset();
  c.max_num_batched_tokens = 256;  // the prompt (300+ tokens) in two chunks
  eng = engine::Engine::create(c);
  const determinism::Diff chunked = determinism::diff(determinism::run_alone(*eng, target), alone);
  std::printf(
      "default mode, 8B dummy, %zu greedy tokens: in a batch of 64, %lld token ids and %lld "
      "logprobs differ (first at %lld); with chunk 256, %lld and %lld (first at %lld)\n",
      alone.tokens.size(), static_cast<long long>(in_batch.tokens),
      static_cast<long long>(in_batch.logprobs), static_cast<long long>(in_batch.first),
      static_cast<long long>(chunked.tokens), static_cast<long long>(chunked.logprobs),
      static_cast<long long>(chunked.first));
  EXPECT_GT(in_batch.logprobs + chunked.logprobs, 0)
      << "the default mode gave the same bits in a batch of 64 and under chunk 256";
}

}  // namespace
}  // namespace macserve::testing
