// Request in, RequestOutput deltas out, through a thread-safe ResponseStream.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "macserve/sampling/sampler.h"
#include "macserve/sampling/sampling_params.h"

namespace macserve::engine {

enum class FinishReason { kNone, kStop, kLength, kAbort, kError };
const char* to_string(FinishReason reason);

struct Request {
  std::string id;
  std::vector<int32_t> prompt_ids;  // already tokenized (BOS included when the model wants it)
  sampling::SamplingParams params;
};

struct GeneratedToken {
  int32_t id = -1;
  float logprob = 0.0f;
  std::vector<sampling::TokenLogprob> top;
};

struct RequestOutput {
  std::string text;                     // new text since the previous output
  std::vector<GeneratedToken> tokens;   // new tokens since the previous output
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;                    // set with kError
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // Timings (seconds), filled on the final output.
  double queue_time = 0.0;
  double time_to_first_token = 0.0;
  double total_time = 0.0;
};

// Filled by the engine thread, drained by a front-end thread.
class ResponseStream {
 public:
  // Blocks until an output is available; returns false once the final output has been taken.
  bool next(RequestOutput& out);
  // Asks the engine to stop the request at its next iteration (frees its KV blocks).
  void cancel();
  bool is_cancelled() const;

  // Engine side.
  void push(RequestOutput out);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;
  bool done_ = false;       // the final output has been pushed
  bool drained_ = false;    // ... and taken
  bool cancelled_ = false;
};

}  // namespace macserve::engine
