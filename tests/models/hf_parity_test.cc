// HF parity: small random models of every supported variant (made by
// scripts/gen_hf_parity_fixtures.py with transformers, float32) must give the same logits within
// 1e-4 and the same greedy tokens on the CPU backend, with whole and chunked prefill.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/model_harness.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

constexpr double kLogitTol = 1e-4;

std::vector<std::string> variants() {
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(fixtures_dir() + "/hf_parity"))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

class HfParity : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    dir_ = fixtures_dir() + "/hf_parity/" + GetParam();
    std::ifstream f(dir_ + "/reference.json");
    ref_ = nlohmann::json::parse(f);
  }
  std::string dir_;
  nlohmann::json ref_;
};

TEST_P(HfParity, PromptLogitsMatchWholeAndChunked) {
  const auto prompt = ref_["prompt_ids"].get<std::vector<int32_t>>();
  const auto expected = ref_["prompt_logits"].get<std::vector<std::vector<double>>>();
  for (int64_t chunk : {0, 1, 7, 16}) {
    ModelHarness h(dir_, 128, 16, static_cast<uint64_t>(chunk) + 3);
    const auto got = h.prefill(prompt, chunk);
    ASSERT_EQ(got.size(), expected.size());
    for (std::size_t p = 0; p < got.size(); ++p)
      ASSERT_LT(max_abs_diff(got[p], expected[p]), kLogitTol)
          << "chunk " << chunk << " position " << p;
  }
}

TEST_P(HfParity, GreedyTokensAndStepLogitsMatch) {
  const auto prompt = ref_["prompt_ids"].get<std::vector<int32_t>>();
  const auto expected_ids = ref_["greedy_ids"].get<std::vector<int32_t>>();
  const auto expected_logits = ref_["step_logits"].get<std::vector<std::vector<double>>>();
  ModelHarness h(dir_, 128, 4);
  std::vector<std::vector<float>> step_logits;
  const auto ids = h.greedy(prompt, static_cast<int>(expected_ids.size()), &step_logits);
  EXPECT_EQ(ids, expected_ids);
  for (std::size_t i = 0; i < step_logits.size(); ++i)
    EXPECT_LT(max_abs_diff(step_logits[i], expected_logits[i]), kLogitTol) << "step " << i;
}

INSTANTIATE_TEST_SUITE_P(Variants, HfParity, ::testing::ValuesIn(variants()),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace macserve::testing
