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

// Why a request finished with FinishReason::kError; front ends map it to a status code.
enum class ErrorKind {
  kNone,
  kInvalidRequest,  // bad parameters or prompt (400)
  kContextLength,   // prompt + max_tokens over the context length (400 context_length_exceeded)
  kQueueFull,       // back-pressure: too many queued requests (429)
  kUnavailable,     // the engine is shutting down (503)
  kInternal,        // a model step failed (500)
};
const char* to_string(ErrorKind kind);

// The order in which the scheduler admits waiting requests: arrival (fcfs), or `priority` then
// arrival.
enum class SchedulingPolicy { kFcfs, kPriority };
const char* to_string(SchedulingPolicy policy);

struct Request {
  std::string id;
  std::vector<int32_t> prompt_ids;  // already tokenized (BOS included when the model wants it)
  sampling::SamplingParams params;
  int32_t n = 1;         // completions sharing the prompt (outputs carry their index)
  int32_t priority = 0;  // with the priority policy: lower runs first (ties: arrival order)
  // Finished with reason abort when not done by then (default: never).
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

struct GeneratedToken {
  int32_t id = -1;
  float logprob = 0.0f;
  std::vector<sampling::TokenLogprob> top;
};

// MAC-Attention telemetry of one request (decode steps only).
struct MacUsage {
  int64_t decode_steps = 0;
  int64_t heads = 0;           // (layer, query head) decisions made
  int64_t eligible_heads = 0;  // ... where matching was allowed (context >= --mac-min-context)
  int64_t hit_heads = 0;       // ... that hit
  int64_t groups_all_hit = 0;  // (layer, KV group) pairs whose query heads all hit: K/V read only
  int64_t groups_mixed = 0;    //   near the match; mixed and all-miss groups read the whole context
  int64_t groups_all_miss = 0;
  int64_t kv_bytes_read = 0;  // K/V bytes the attention read
  int64_t kv_bytes_full = 0;  // K/V bytes full attention would have read
  double hit_rate() const {
    return heads > 0 ? static_cast<double>(hit_heads) / static_cast<double>(heads) : 0.0;
  }
};

struct RequestOutput {
  int32_t index = 0;                   // which of the request's n completions
  std::string text;                    // new text since the previous output
  std::vector<GeneratedToken> tokens;  // new tokens since the previous output
  bool finished = false;
  FinishReason finish_reason = FinishReason::kNone;
  std::string error;  // set with kError
  ErrorKind error_kind = ErrorKind::kNone;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  // Timings (seconds), filled on the final output.
  double queue_time = 0.0;
  double time_to_first_token = 0.0;
  double total_time = 0.0;
  double prefill_time = 0.0;           // first scheduled -> first token
  double time_per_output_token = 0.0;  // mean over tokens after the first
  int64_t cached_prompt_tokens = 0;    // prompt tokens served from the prefix cache
  int64_t num_preemptions = 0;
  MacUsage mac;  // filled on the final output
};

// Filled by the engine thread, drained by a front-end thread. Ends once all n completions have
// pushed their final output and it has been taken.
class ResponseStream {
 public:
  explicit ResponseStream(int32_t n = 1) : remaining_(n < 1 ? 1 : n) {}
  // Blocks until an output is available; returns false once the final output has been taken.
  bool next(RequestOutput& out);
  // Non-blocking: takes every output queued so far (appended to `out`); returns true once the
  // final output has been taken.
  bool poll(std::vector<RequestOutput>& out);
  // Called (on the engine thread, without the stream's lock held) after every push; an
  // asynchronous front end uses it to wake its connection. Set it before the first output can
  // arrive or call poll() right after setting it.
  void set_listener(std::function<void()> listener);
  // Asks the engine to stop the request at its next iteration (frees its KV blocks).
  void cancel();
  bool is_cancelled() const;

  // Engine side.
  void push(RequestOutput out);

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestOutput> queue_;
  int32_t remaining_;     // completions not finished yet
  bool done_ = false;     // every completion's final output has been pushed
  bool drained_ = false;  // ... and taken
  bool cancelled_ = false;
  std::function<void()> listener_;
};

}  // namespace macserve::engine
