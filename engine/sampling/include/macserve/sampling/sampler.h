// Sampler: logits of one request -> one token, with penalties, bias, temperature, top-k/top-p/min-p
// and a per-request random stream (so a seeded request draws the same tokens whatever the batch).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "macserve/sampling/sampling_params.h"

namespace macserve::sampling {

struct TokenLogprob {
  int32_t token = -1;
  float logprob = 0.0f;
};

struct SampleResult {
  int32_t token = -1;
  float logprob = 0.0f;           // log-softmax of the raw logits (before sampling transforms)
  std::vector<TokenLogprob> top;  // top-k alternatives when params.logprobs > 0
};

// Per-request sampling state: the random stream and the counts of generated tokens.
class RequestSampler {
 public:
  RequestSampler(const SamplingParams& params, uint64_t fallback_seed);
  // logits: [vocab] float32 (modified in place). tokens = prompt then generated ids (the first
  // prompt_len are the prompt); they feed the penalties.
  SampleResult sample(float* logits, int64_t vocab, const std::vector<int32_t>& tokens,
                      std::size_t prompt_len, bool suppress_eos, int32_t eos_id);
  // Whether sample() would return exactly the first maximum of the raw logits, with nothing else
  // to report: greedy, no logprobs, no logit bias or penalties, no EOS suppression. Such a row can
  // be sampled where the logits are (Backend::argmax_rows).
  bool is_plain_argmax(bool suppress_eos) const;

 private:
  void apply_penalties(float* logits, int64_t vocab, const std::vector<int32_t>& tokens,
                       std::size_t prompt_len) const;
  SamplingParams params_;
  std::mt19937_64 rng_;
};

}  // namespace macserve::sampling
