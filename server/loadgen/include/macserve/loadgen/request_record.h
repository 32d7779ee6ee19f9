// What the client saw of one request: timings taken on the client's clock at the moment bytes
// arrived, the server's usage counts, and how it failed if it did. Times are seconds.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace macserve::loadgen {

struct RequestRecord {
  int64_t sample_index = -1;  // position in the dataset
  bool success = false;
  std::string error_kind;  // "" on success; "http_503", "connect", "timeout", "disconnect",
                           // "stream_error", "grpc_UNAVAILABLE", ...
  std::string error;       // message (server's error body when there is one)
  int64_t prompt_len = 0;  // tokens, by the client's tokenizer (the dataset's count)
  int64_t max_tokens = 0;  // requested output length
  int64_t server_prompt_tokens = -1;  // usage.prompt_tokens; -1 when the server sent none
  int64_t output_tokens = -1;         // usage.completion_tokens; -1 when the server sent none
  std::string generated_text;
  std::string finish_reason;
  double start_s = 0;                  // when the request was sent, since the benchmark start
  double ttft_s = 0;                   // first text-bearing chunk, since start_s
  double latency_s = 0;                // last text-bearing chunk (E2EL), since start_s
  std::vector<double> chunk_times_s;   // every text-bearing chunk's arrival, since start_s
  std::optional<bool> answer_correct;  // long-context: the needle's answer is in the reply

  // Inter-token latencies: gaps between successive chunk arrivals (vLLM's `itl`).
  std::vector<double> itls() const;
};

}  // namespace macserve::loadgen
