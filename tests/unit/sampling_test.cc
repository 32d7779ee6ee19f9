// Sampler: greedy, support restriction by top-k/top-p/min-p, seeds, penalties, logprobs.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>

#include "macserve/core/error.h"
#include "macserve/sampling/sampler.h"

using macserve::sampling::RequestSampler;
using macserve::sampling::SamplingParams;

namespace {

std::vector<float> logits5() { return {1.0f, 3.0f, 2.0f, 0.5f, 2.9f}; }

std::set<int32_t> support(SamplingParams p, int draws = 3000) {
  RequestSampler s(p, 1);
  std::set<int32_t> seen;
  for (int i = 0; i < draws; ++i) {
    auto l = logits5();
    seen.insert(s.sample(l.data(), 5, {}, 0, false, -1).token);
  }
  return seen;
}

TEST(Sampler, GreedyTakesArgmax) {
  SamplingParams p;
  p.temperature = 0.0f;
  RequestSampler s(p, 1);
  auto l = logits5();
  EXPECT_EQ(s.sample(l.data(), 5, {}, 0, false, -1).token, 1);
}

TEST(Sampler, TopKTopPMinPRestrictSupportExactly) {
  SamplingParams p;
  p.temperature = 1.0f;
  EXPECT_EQ(support(p), (std::set<int32_t>{0, 1, 2, 3, 4}));
  p.top_k = 2;
  EXPECT_EQ(support(p), (std::set<int32_t>{1, 4}));
  p.top_k = 0;
  // probabilities ~ [0.052, 0.385, 0.142, 0.031, 0.349]: top_p 0.7 keeps {1, 4} (0.734)
  p.top_p = 0.7f;
  EXPECT_EQ(support(p), (std::set<int32_t>{1, 4}));
  p.top_p = 1.0f;
  p.min_p = 0.3f;  // keep p >= 0.3 * 0.385 = 0.1155: {1, 4, 2}
  EXPECT_EQ(support(p), (std::set<int32_t>{1, 2, 4}));
}

TEST(Sampler, TemperatureChangesFrequenciesAsSoftmax) {
  SamplingParams p;
  p.temperature = 0.5f;
  RequestSampler s(p, 3);
  std::map<int32_t, int> counts;
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    auto l = logits5();
    ++counts[s.sample(l.data(), 5, {}, 0, false, -1).token];
  }
  double z = 0;
  for (float x : logits5()) z += std::exp(x / 0.5);
  for (int t = 0; t < 5; ++t) {
    const double expect = std::exp(logits5()[t] / 0.5) / z;
    EXPECT_NEAR(counts[t] / double(n), expect, 0.015) << "token " << t;
  }
}

TEST(Sampler, SameSeedSameTokensDifferentSeedDiffers) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 42;
  auto draw = [&](SamplingParams q) {
    RequestSampler s(q, 999);
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) {
      auto l = logits5();
      out.push_back(s.sample(l.data(), 5, {}, 0, false, -1).token);
    }
    return out;
  };
  EXPECT_EQ(draw(p), draw(p));
  SamplingParams other = p;
  other.seed = 43;
  EXPECT_NE(draw(p), draw(other));
}

TEST(Sampler, PenaltiesAndBiasChangeLogitsAsSpecified) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  p.logit_bias = {{3, 10.0f}};
  RequestSampler s(p, 1);
  auto l = logits5();
  s.sample(l.data(), 5, /*tokens: prompt {1}, generated {4, 4}=*/{1, 4, 4}, /*prompt_len=*/1, false,
           -1);
  EXPECT_FLOAT_EQ(l[1], 3.0f / 2.0f);                     // repetition (prompt token)
  EXPECT_FLOAT_EQ(l[4], 2.9f / 2.0f - 0.5f - 2 * 0.25f);  // repetition + presence + 2x frequency
  EXPECT_FLOAT_EQ(l[3], 10.5f);                           // bias
  EXPECT_FLOAT_EQ(l[0], 1.0f);
}

TEST(Sampler, EosSuppressedUnderMinTokensAndLogprobsReported) {
  SamplingParams p;
  p.temperature = 0.0f;
  p.logprobs = 2;
  RequestSampler s(p, 1);
  auto l = logits5();
  auto r = s.sample(l.data(), 5, {}, 0, /*suppress_eos=*/true, /*eos=*/1);
  EXPECT_EQ(r.token, 4);
  double z = 0;
  for (float x : logits5()) z += std::exp(x);
  EXPECT_NEAR(r.logprob, 2.9 - std::log(z), 1e-5);
  ASSERT_EQ(r.top.size(), 2u);
  EXPECT_EQ(r.top[0].token, 1);  // raw distribution, before suppression
  EXPECT_EQ(r.top[1].token, 4);
}

TEST(Sampler, ValidateRejectsOutOfRange) {
  SamplingParams p;
  p.top_p = 0.0f;
  EXPECT_THROW(p.validate(), macserve::Error);
  p = {};
  p.max_tokens = 0;
  EXPECT_THROW(p.validate(), macserve::Error);
  p = {};
  p.temperature = NAN;
  EXPECT_THROW(p.validate(), macserve::Error);
  p = {};
  EXPECT_NO_THROW(p.validate());
}

}  // namespace
