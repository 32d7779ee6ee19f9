// Shared by the engine tests: drain a ResponseStream into one result, submit many and collect,
// and wait for the engine's stats to settle after the last step.
#pragma once

#include <chrono>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "macserve/engine/engine.h"

namespace macserve::testing {

struct StreamResult {
  std::vector<int32_t> ids;
  std::string text;
  engine::FinishReason reason = engine::FinishReason::kNone;
  std::string error;
  int64_t cached = 0;
  engine::MacUsage mac;
};

inline StreamResult collect(const std::shared_ptr<engine::ResponseStream>& s) {
  StreamResult r;
  engine::RequestOutput out;
  while (s->next(out)) {
    for (const auto& t : out.tokens) r.ids.push_back(t.id);
    r.text += out.text;
    if (out.finished) {
      r.reason = out.finish_reason;
      r.error = out.error;
      r.cached = out.cached_prompt_tokens;
      r.mac = out.mac;
    }
  }
  return r;
}

// Submits all requests at once, then drains each stream.
inline std::vector<StreamResult> run_all(engine::Engine& eng,
                                         const std::vector<engine::Request>& reqs) {
  std::vector<std::shared_ptr<engine::ResponseStream>> streams;
  streams.reserve(reqs.size());
  for (const engine::Request& r : reqs) streams.push_back(eng.submit(r));
  std::vector<StreamResult> out;
  out.reserve(streams.size());
  for (auto& s : streams) out.push_back(collect(s));
  return out;
}

// `n` greedy requests (ignore_eos, `max_tokens` each) of BOS and 39-158 random ids drawn with
// `seed`, named prefix0, prefix1, ...
inline std::vector<engine::Request> random_greedy_requests(int n, int64_t vocab, uint32_t seed,
                                                           const std::string& prefix,
                                                           int64_t max_tokens) {
  std::mt19937 rng(seed);
  std::vector<engine::Request> reqs;
  for (int i = 0; i < n; ++i) {
    engine::Request r;
    r.id = prefix + std::to_string(i);
    r.prompt_ids.push_back(1);
    const int len = 40 + static_cast<int>(rng() % 120);
    for (int j = 1; j < len; ++j)
      r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
    r.params.temperature = 0.0f;
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    reqs.push_back(std::move(r));
  }
  return reqs;
}

// Stats are published after each engine iteration: wait for the one after the last step.
inline engine::EngineStats settled_stats(engine::Engine& eng) {
  for (int i = 0; i < 200; ++i) {
    auto st = eng.stats();  // not const, so that the return moves it
    if (st.num_running == 0 && st.num_waiting == 0) return st;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return eng.stats();
}

}  // namespace macserve::testing
