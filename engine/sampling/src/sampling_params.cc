#include <cmath>

#include "macserve/core/error.h"
#include "macserve/sampling/sampling_params.h"

namespace macserve::sampling {
namespace {

void require(bool ok, const char* field, const std::string& why) {
  if (!ok) throw_error(ErrorCode::kInvalidArgument, "'{}' {}", field, why);
}

}  // namespace

void SamplingParams::validate() const {
  require(std::isfinite(temperature) && temperature >= 0.0f && temperature <= 100.0f, "temperature",
          "must be in [0, 100]");
  require(top_k >= -1, "top_k", "must be -1, 0 or positive");
  require(std::isfinite(top_p) && top_p > 0.0f && top_p <= 1.0f, "top_p", "must be in (0, 1]");
  require(std::isfinite(min_p) && min_p >= 0.0f && min_p <= 1.0f, "min_p", "must be in [0, 1]");
  require(
      std::isfinite(repetition_penalty) && repetition_penalty > 0.0f && repetition_penalty <= 10.0f,
      "repetition_penalty", "must be in (0, 10]");
  require(std::isfinite(presence_penalty) && std::fabs(presence_penalty) <= 2.0f,
          "presence_penalty", "must be in [-2, 2]");
  require(std::isfinite(frequency_penalty) && std::fabs(frequency_penalty) <= 2.0f,
          "frequency_penalty", "must be in [-2, 2]");
  require(max_tokens >= 1, "max_tokens", "must be at least 1");
  require(min_tokens >= 0 && min_tokens <= max_tokens, "min_tokens", "must be in [0, max_tokens]");
  require(logprobs >= -1 && logprobs <= 20, "logprobs", "must be in [0, 20]");
  for (const auto& s : stop) require(!s.empty(), "stop", "strings must not be empty");
  for (const auto& [tok, bias] : logit_bias)
    require(std::isfinite(bias) && std::fabs(bias) <= 100.0f, "logit_bias",
            "values must be in [-100, 100]");
}

}  // namespace macserve::sampling
