// Shared by the engine tests: drain a ResponseStream into one result, submit many and collect,
// and wait for the engine's stats to settle after the last step.
#pragma once

#include <chrono>
#include <memory>
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
