// Real weights: every model in ../shared/models reproduces golden.json (computed by transformers in
// float32): greedy ids exactly, top-5 logits of the first 8 steps within 1e-3.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "models/model_harness.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

constexpr double kTop5Tol = 1e-3;

nlohmann::json golden() {
  std::ifstream f(models_dir() + "/golden.json");
  return nlohmann::json::parse(f);
}

void check_top5(const std::vector<std::vector<float>>& step_logits, const nlohmann::json& top5) {
  for (std::size_t s = 0; s < top5.size() && s < step_logits.size(); ++s) {
    for (const auto& pair : top5[s]) {
      const int32_t tok = pair[0].get<int32_t>();
      const double val = pair[1].get<double>();
      EXPECT_NEAR(step_logits[s][static_cast<std::size_t>(tok)], val, kTop5Tol)
          << "step " << s << " token " << tok;
    }
    // The reported top-1 is our argmax too.
    const int32_t top1 = top5[s][0][0].get<int32_t>();
    EXPECT_EQ(
        std::max_element(step_logits[s].begin(), step_logits[s].end()) - step_logits[s].begin(),
        top1);
  }
}

TEST(Golden, Stories260KGreedy200) {
  MACSERVE_REQUIRE_PATH(models_dir() + "/golden.json");
  const auto g = golden()["stories260K"];
  ModelHarness h(models_dir() + "/stories260K", 512);
  const auto prompt = g["prompt_ids"].get<std::vector<int32_t>>();
  const auto expected = g["greedy_ids"].get<std::vector<int32_t>>();
  ASSERT_EQ(expected.size(), prompt.size() + 200);  // greedy_ids = BOS + 200 tokens
  std::vector<std::vector<float>> logits;
  const auto got = h.greedy(prompt, 200, &logits);
  std::vector<int32_t> full = prompt;
  full.insert(full.end(), got.begin(), got.end());
  EXPECT_EQ(full, expected);
  check_top5(logits, g["top5_first8"]);
}

class TinyGolden : public ::testing::TestWithParam<std::string> {};

TEST_P(TinyGolden, SamplesMatch) {
  MACSERVE_REQUIRE_PATH(models_dir() + "/golden.json");
  const auto g = golden()[GetParam()];
  ModelHarness h(models_dir() + "/" + GetParam(), 512);
  const int32_t eos = static_cast<int32_t>(h.config().eos_token_id);
  for (const auto& sample : g["samples"]) {
    const auto prompt = sample["prompt_ids"].get<std::vector<int32_t>>();
    const auto expected = sample["greedy_ids"].get<std::vector<int32_t>>();
    const int n = static_cast<int>(expected.size() - prompt.size());
    std::vector<std::vector<float>> logits;
    std::vector<int32_t> full = prompt;
    const auto got = h.greedy(prompt, n, &logits, eos);
    full.insert(full.end(), got.begin(), got.end());
    EXPECT_EQ(full, expected) << "prompt: " << sample["prompt"];
    check_top5(logits, sample["top5_first8"]);
  }
}

INSTANTIATE_TEST_SUITE_P(Models, TinyGolden,
                         ::testing::Values("tiny-llama-sp", "tiny-qwen2-bpe", "tiny-qwen3-bpe"),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

}  // namespace
}  // namespace macserve::testing
