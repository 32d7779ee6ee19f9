// Sampling pipeline, in the order vLLM and HF apply it: logit_bias, penalties, (EOS suppression
// under min_tokens), temperature, top-k, top-p, min-p, then one draw from the renormalised
// distribution. Logprobs are reported from the raw logits, as OpenAI does.
#include "macserve/sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

namespace macserve::sampling {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// log-softmax value of one entry, computed stably.
std::vector<float> log_softmax(const float* logits, int64_t vocab) {
  const float mx = *std::max_element(logits, logits + vocab);
  double sum = 0.0;
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(static_cast<double>(logits[i] - mx));
  const float lse = mx + static_cast<float>(std::log(sum));
  std::vector<float> out(static_cast<std::size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) out[i] = logits[i] - lse;
  return out;
}

int32_t argmax(const float* x, int64_t n) {
  return static_cast<int32_t>(std::max_element(x, x + n) - x);  // first maximum on ties
}

}  // namespace

RequestSampler::RequestSampler(const SamplingParams& params, uint64_t fallback_seed)
    : params_(params), rng_(params.seed.value_or(fallback_seed)) {}

bool RequestSampler::is_plain_argmax(bool suppress_eos) const {
  return params_.is_greedy() && params_.logprobs < 0 && params_.logit_bias.empty() &&
         params_.repetition_penalty == 1.0f && params_.presence_penalty == 0.0f &&
         params_.frequency_penalty == 0.0f && !suppress_eos;
}

void RequestSampler::apply_penalties(float* logits, int64_t vocab,
                                     const std::vector<int32_t>& tokens,
                                     std::size_t prompt_len) const {
  if (params_.repetition_penalty != 1.0f) {  // over prompt and generated tokens
    std::vector<bool> seen(static_cast<std::size_t>(vocab), false);
    for (int32_t t : tokens)
      if (t >= 0 && t < vocab) seen[t] = true;
    for (int64_t i = 0; i < vocab; ++i) {
      if (!seen[i]) continue;
      logits[i] = logits[i] > 0 ? logits[i] / params_.repetition_penalty
                                : logits[i] * params_.repetition_penalty;
    }
  }
  if (params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> counts;  // generated tokens only
    for (std::size_t i = prompt_len; i < tokens.size(); ++i) ++counts[tokens[i]];
    for (const auto& [t, n] : counts) {
      if (t < 0 || t >= vocab) continue;
      logits[t] -= params_.frequency_penalty * static_cast<float>(n) + params_.presence_penalty;
    }
  }
}

SampleResult RequestSampler::sample(float* logits, int64_t vocab,
                                    const std::vector<int32_t>& tokens, std::size_t prompt_len,
                                    bool suppress_eos, int32_t eos_id) {
  SampleResult result;
  std::vector<float> raw_logprobs;
  if (params_.logprobs >= 0) raw_logprobs = log_softmax(logits, vocab);

  for (const auto& [tok, bias] : params_.logit_bias)
    if (tok >= 0 && tok < vocab) logits[tok] += bias;
  apply_penalties(logits, vocab, tokens, prompt_len);
  if (suppress_eos && eos_id >= 0 && eos_id < vocab) logits[eos_id] = kNegInf;
  for (int32_t t : params_.stop_token_ids)
    if (suppress_eos && t >= 0 && t < vocab) logits[t] = kNegInf;

  if (params_.is_greedy()) {
    result.token = argmax(logits, vocab);
  } else {
    // Candidates sorted by logit (descending; ties by id), then truncated by top-k/top-p/min-p.
    const float inv_t = 1.0f / params_.temperature;
    std::vector<int32_t> order(static_cast<std::size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    int64_t keep = vocab;
    if (params_.top_k > 0) keep = std::min<int64_t>(keep, params_.top_k);
    auto by_logit = [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
    order.resize(static_cast<std::size_t>(keep));
    const float mx = logits[order[0]];
    std::vector<double> probs(order.size());
    double sum = 0.0;
    for (std::size_t i = 0; i < order.size(); ++i)
      sum += probs[i] = std::exp(static_cast<double>((logits[order[i]] - mx) * inv_t));
    for (double& p : probs) p /= sum;
    std::size_t n = probs.size();
    if (params_.top_p < 1.0f) {  // smallest prefix whose mass reaches top_p (at least one token)
      double cum = 0.0;
      for (std::size_t i = 0; i < probs.size(); ++i) {
        cum += probs[i];
        if (cum >= params_.top_p) {
          n = i + 1;
          break;
        }
      }
    }
    if (params_.min_p > 0.0f) {  // drop tokens below min_p x the top probability
      const double floor = params_.min_p * probs[0];
      std::size_t m = 1;
      while (m < n && probs[m] >= floor) ++m;
      n = m;
    }
    double kept = 0.0;
    for (std::size_t i = 0; i < n; ++i) kept += probs[i];
    std::uniform_real_distribution<double> uni(0.0, kept);
    const double u = uni(rng_);
    double acc = 0.0;
    result.token = order[n - 1];
    for (std::size_t i = 0; i < n; ++i) {
      acc += probs[i];
      if (u < acc) {
        result.token = order[i];
        break;
      }
    }
  }
  if (params_.logprobs >= 0) {
    result.logprob = raw_logprobs[result.token];
    if (params_.logprobs > 0) {
      std::vector<int32_t> idx(static_cast<std::size_t>(vocab));
      std::iota(idx.begin(), idx.end(), 0);
      const int64_t k = std::min<int64_t>(params_.logprobs, vocab);
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int32_t a, int32_t b) {
        return raw_logprobs[a] > raw_logprobs[b] || (raw_logprobs[a] == raw_logprobs[b] && a < b);
      });
      for (int64_t i = 0; i < k; ++i) result.top.push_back({idx[i], raw_logprobs[idx[i]]});
    }
  }
  return result;
}

}  // namespace macserve::sampling
