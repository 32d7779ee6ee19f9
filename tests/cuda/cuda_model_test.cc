// Whole models on the GPU (bf16 weights and KV) against the CPU float32 path: prompt logits within
// bf16 tolerance, greedy tokens equal to the goldens (a divergence must sit at a near-tie of the
// CPU logits, and is reported), batched steps equal to each sequence alone.
#include <cstdio>
#include <cstring>
#include <fstream>

#include <nlohmann/json.hpp>

#include "backend_harness.h"
#include "cuda_test_util.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

constexpr double kLogitRelTol = 3e-2;  // bf16 weights vs float32 weights, whole model
// SmolLM2-135M has 30 layers (the tiny models 2-6): bf16 rounding of weights and of every linear
// layer's input compounds with depth. Measured on the H200 (2026-11-28): prefill logits 1.9e-2 to
// 4.7e-2, decode 1.2e-2 to 2.4e-2 relative L2, greedy tokens equal except at a near-tie.
double logit_tol(const std::string& model) { return model == "SmolLM2" ? 6e-2 : kLogitRelTol; }
constexpr float kNearTie = 0.25f;  // CPU top-1 minus top-2 logit below which a flip is a near-tie

struct Sample {
  std::vector<int32_t> prompt, expected;  // expected: greedy continuation only
};

std::string model_path(const std::string& name) {
  return name == "SmolLM2" ? default_model_path() : models_dir() + "/" + name;
}

std::vector<Sample> samples(const std::string& name) {
  std::vector<Sample> out;
  if (name == "SmolLM2") {
    std::ifstream f(fixtures_dir() + "/smollm2/reference.json");
    const nlohmann::json ref =
        nlohmann::json::parse(f);  // named: a temporary would dangle in the loop
    for (const auto& s : ref["samples"])
      out.push_back({s["prompt_ids"].get<std::vector<int32_t>>(),
                     s["greedy_ids"].get<std::vector<int32_t>>()});
    return out;
  }
  std::ifstream f(models_dir() + "/golden.json");
  const nlohmann::json golden = nlohmann::json::parse(f);
  for (const auto& s : golden.at(name).at("samples")) {
    Sample smp{s["prompt_ids"].get<std::vector<int32_t>>(),
               s["greedy_ids"].get<std::vector<int32_t>>()};
    smp.expected.erase(smp.expected.begin(),
                       smp.expected.begin() + static_cast<std::ptrdiff_t>(smp.prompt.size()));
    out.push_back(smp);
  }
  return out;
}

float top2_margin(const std::vector<float>& l) {
  float a = -INFINITY, b = -INFINITY;
  for (float x : l) {
    if (x > a)
      b = a, a = x;
    else if (x > b)
      b = x;
  }
  return a - b;
}

class CudaModel : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaModel, LogitsAndGreedyMatchCpu) {
  MACSERVE_REQUIRE_CUDA(gpu);
  MACSERVE_REQUIRE_PATH(model_path(GetParam()));
  auto cpu = backend::make_cpu_backend();
  BackendHarness hc(model_path(GetParam()), *cpu), hg(model_path(GetParam()), *gpu);
  const int32_t eos = static_cast<int32_t>(hc.config().eos_token_id);
  const auto all = samples(GetParam());
  ASSERT_FALSE(all.empty());
  int si = 0;
  for (const Sample& s : all) {
    // Prompt logits, every position (the general prefill kernel).
    const auto lc = hc.step({{0, s.prompt, 0}}), lg = hg.step({{0, s.prompt, 0}});
    double worst = 0.0;
    for (std::size_t r = 0; r < lc.size(); ++r) worst = std::max(worst, rel_l2(lg[r], lc[r]));
    EXPECT_LT(worst, logit_tol(GetParam())) << "sample " << si;
    // Greedy decode on the GPU (the split-KV decode kernel) vs the golden tokens.
    std::vector<std::vector<float>> cpu_logits, gpu_logits;
    const int n = static_cast<int>(s.expected.size());
    const auto got = hg.greedy(1, s.prompt, n, &gpu_logits, eos);
    hc.greedy(1, s.prompt, n, &cpu_logits, eos);
    double worst_step = 0.0;
    std::size_t i = 0;
    for (; i < got.size() && i < s.expected.size() && got[i] == s.expected[i]; ++i)
      worst_step = std::max(worst_step, rel_l2(gpu_logits[i], cpu_logits[i]));
    std::printf(
        "%s sample %d: prompt %zu tokens, prefill logits rel_l2 %.2e, decode logits rel_l2 %.2e, "
        "%zu/%zu greedy tokens equal the golden\n",
        GetParam().c_str(), si, s.prompt.size(), worst, worst_step, i, s.expected.size());
    EXPECT_LT(worst_step, logit_tol(GetParam())) << "sample " << si;
    if (i < s.expected.size() && i < got.size()) {
      const float margin = i < cpu_logits.size() ? top2_margin(cpu_logits[i]) : 0.0f;
      std::printf(
          "  diverged at step %zu: GPU %d, golden %d, CPU top-2 margin %.4f (near-tie below "
          "%.2f)\n",
          i, got[i], s.expected[i], margin, kNearTie);
      EXPECT_LT(margin, kNearTie) << "divergence at step " << i << " is not a near-tie";
    }
    ++si;
  }
}

TEST_P(CudaModel, BatchedEqualsAlone) {
  MACSERVE_REQUIRE_CUDA(gpu);
  MACSERVE_REQUIRE_PATH(model_path(GetParam()));
  BackendHarness alone(model_path(GetParam()), *gpu), batched(model_path(GetParam()), *gpu);
  const auto ss = samples(GetParam());
  ASSERT_FALSE(ss.empty());
  const int n = 8;
  std::vector<std::vector<int32_t>> want;
  for (int q = 0; q < 3; ++q) want.push_back(alone.greedy(q, ss[q % ss.size()].prompt, n));
  // Batched: all prompts in one step, then every sequence decodes in the same steps.
  std::vector<BackendHarness::Chunk> chunks;
  for (int q = 0; q < 3; ++q) chunks.push_back({q, ss[q % ss.size()].prompt, 0});
  auto rows = batched.step(chunks);
  std::vector<std::vector<int32_t>> got(3);
  std::vector<std::vector<float>> last(3);
  std::size_t row = 0;
  for (int q = 0; q < 3; ++q) {
    row += ss[q % ss.size()].prompt.size();
    last[q] = rows[row - 1];
  }
  for (int i = 0; i < n; ++i) {
    chunks.clear();
    for (int q = 0; q < 3; ++q) {
      const auto tok =
          static_cast<int32_t>(std::max_element(last[q].begin(), last[q].end()) - last[q].begin());
      got[q].push_back(tok);
      chunks.push_back({q, {tok}, static_cast<int64_t>(ss[q % ss.size()].prompt.size()) + i});
    }
    if (i + 1 < n) {
      rows = batched.step(chunks);
      for (int q = 0; q < 3; ++q) last[q] = rows[q];
    }
  }
  for (int q = 0; q < 3; ++q) EXPECT_EQ(got[q], want[q]) << "sequence " << q;
}

// Decode steps replayed from CUDA graphs (batch padded to its bucket, inactive rows with slot -1)
// against eager steps: the same step run twice (first eager + capture, then replay) gives bitwise
// equal logits, and over several steps at batch sizes 1, 3, 8 and 17 the graph model's logits stay
// within bf16 tolerance of an unpadded eager model fed the same tokens.
TEST_P(CudaModel, GraphReplayEqualsEager) {
  MACSERVE_REQUIRE_CUDA(gpu);
  MACSERVE_REQUIRE_PATH(model_path(GetParam()));
  if (!gpu->supports_graphs()) GTEST_SKIP() << "backend " << gpu->name() << " has no graphs";
  const int kSeqs = 17;
  BackendHarness g(model_path(GetParam()), *gpu, kSeqs, 256),
      e(model_path(GetParam()), *gpu, kSeqs, 256);
  g.model().set_graphs(true);
  e.model().set_graphs(false);
  const auto ss = samples(GetParam());
  ASSERT_FALSE(ss.empty());
  double worst = 0.0;
  int replays_equal = 0;
  for (int batch : {1, 3, 8, 17}) {
    std::vector<BackendHarness::Chunk> chunks;
    std::vector<int64_t> pos(batch);
    for (int q = 0; q < batch; ++q) {
      auto prompt = ss[q % ss.size()].prompt;
      if (prompt.size() > 64) prompt.resize(64);
      prompt.push_back(static_cast<int32_t>(q + 1));  // distinct sequences
      chunks.push_back({q, prompt, 0});
      pos[q] = static_cast<int64_t>(prompt.size());
    }
    g.step(chunks);
    auto rows = e.step(chunks);
    std::vector<std::vector<float>> last(batch);
    std::size_t row = 0;
    for (int q = 0; q < batch; ++q) last[q] = rows[(row += chunks[q].ids.size()) - 1];
    for (int i = 0; i < 6; ++i) {
      chunks.clear();
      for (int q = 0; q < batch; ++q) {
        const auto tok = static_cast<int32_t>(std::max_element(last[q].begin(), last[q].end()) -
                                              last[q].begin());
        chunks.push_back({q, {tok}, pos[q]++});
      }
      const auto first = g.step(chunks);
      const auto again = g.step(chunks);  // same inputs (the KV write is idempotent): a replay
      const auto eager = e.step(chunks);
      ASSERT_EQ(first.size(), static_cast<std::size_t>(batch));
      for (int q = 0; q < batch; ++q) {
        EXPECT_EQ(std::memcmp(first[q].data(), again[q].data(), first[q].size() * sizeof(float)), 0)
            << "batch " << batch << " step " << i << " row " << q
            << ": replay differs from the first run";
        replays_equal +=
            std::memcmp(first[q].data(), again[q].data(), first[q].size() * sizeof(float)) == 0;
        const double d = rel_l2(again[q], eager[q]);
        worst = std::max(worst, d);
        EXPECT_LT(d, kBf16Tol) << "batch " << batch << " step " << i << " row " << q;
        last[q] = eager[q];
      }
    }
  }
  std::printf(
      "%s: %d replayed rows bitwise equal to the first run; graph vs unpadded eager logits rel_l2 "
      "<= %.2e\n",
      GetParam().c_str(), replays_equal, worst);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaModel,
                         ::testing::Values("tiny-llama-sp", "tiny-qwen2-bpe", "tiny-qwen3-bpe",
                                           "SmolLM2"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace macserve::testing
