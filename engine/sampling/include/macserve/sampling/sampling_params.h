// SamplingParams: how one request turns logits into tokens and when it stops.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace macserve::sampling {

struct SamplingParams {
  float temperature = 1.0f;  // 0 = greedy
  int32_t top_k = 0;         // 0 or -1 = off
  float top_p = 1.0f;        // 1 = off
  float min_p = 0.0f;        // 0 = off
  float repetition_penalty =
      1.0f;  // 1 = off (HF semantics: divide positive logits, multiply negative)
  float presence_penalty = 0.0f;  // OpenAI semantics, over generated tokens
  float frequency_penalty = 0.0f;
  std::vector<std::pair<int32_t, float>> logit_bias;
  std::optional<uint64_t> seed;  // same seed -> same tokens, whatever else is in the batch
  int32_t max_tokens = 16;
  int32_t min_tokens = 0;
  std::vector<std::string> stop;  // stop strings, excluded from the output
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t logprobs = -1;  // -1: none; k >= 0: the sampled token's logprob plus top-k alternatives
  bool skip_special_tokens = true;  // drop special tokens (BOS/EOS/...) from the streamed text

  // Throws Error(kInvalidArgument) naming the field when a value is out of range.
  void validate() const;
  bool is_greedy() const { return temperature <= 0.0f; }
};

}  // namespace macserve::sampling
