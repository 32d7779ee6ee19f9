// Sequence: one request's state inside the engine thread (never touched by front ends).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "macserve/engine/request.h"
#include "macserve/sampling/sampler.h"
#include "macserve/tokenizer/tokenizer.h"
#include "macserve/engine/stop_matcher.h"

namespace macserve::engine {

using Clock = std::chrono::steady_clock;

enum class SeqStatus { kWaiting, kRunning, kFinished };

struct Sequence {
  Sequence(Request req, std::shared_ptr<ResponseStream> out, const tokenizer::Tokenizer& tok,
           uint64_t fallback_seed)
      : id(std::move(req.id)),
        prompt(std::move(req.prompt_ids)),
        params(std::move(req.params)),
        sampler(params, fallback_seed),
        stream(std::move(out)),
        detokenizer(tok, /*skip_special=*/true),
        stop(params.stop) {}

  int64_t total_len() const { return static_cast<int64_t>(prompt.size() + generated.size()); }
  int32_t token_at(int64_t i) const {
    const auto n = static_cast<int64_t>(prompt.size());
    return i < n ? prompt[static_cast<std::size_t>(i)] : generated[static_cast<std::size_t>(i - n)];
  }

  std::string id;
  std::vector<int32_t> prompt;
  std::vector<int32_t> generated;
  sampling::SamplingParams params;
  sampling::RequestSampler sampler;
  std::shared_ptr<ResponseStream> stream;
  tokenizer::IncrementalDetokenizer detokenizer;
  StopMatcher stop;

  SeqStatus status = SeqStatus::kWaiting;
  std::vector<int32_t> block_table;
  int64_t num_computed = 0;  // tokens whose K/V are in the cache

  Clock::time_point arrival = Clock::now();
  Clock::time_point first_scheduled{};
  Clock::time_point first_token{};
};

}  // namespace macserve::engine
