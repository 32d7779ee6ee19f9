// A backend sends one benchmark request and records what came back, chunk by chunk, into a
// RequestRecord; the runner does not know the protocol. `openai` (/v1/completions) and
// `openai-chat` (/v1/chat/completions) stream SSE over the HTTP client; `grpc` streams Generate.
// Every backend calls `done` exactly once, on the runner's event-loop thread.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "macserve/loadgen/dataset.h"
#include "macserve/loadgen/http_client.h"
#include "macserve/loadgen/request_record.h"

namespace macserve::loadgen {

struct BackendOptions {
  std::string name = "openai";  // openai | openai-chat | grpc
  BaseUrl url;                  // host, port and path prefix (HTTP) or host:port (gRPC)
  std::string endpoint;         // request path; empty: the backend's default
  std::string model;            // the served model name sent in requests
  std::string api_key;          // "Authorization: Bearer" when not empty
  bool ignore_eos = false;
  double temperature = 0.0;
  double timeout_s = 0;  // per request; 0 = none
};

class Backend {
 public:
  virtual ~Backend() = default;
  // `record` must stay valid until `done` runs; its times are taken relative to `start`.
  virtual void send(const SampleRequest& sample, RequestRecord& record, Clock::time_point start,
                    std::function<void()> done) = 0;
  virtual std::string endpoint() const = 0;
};

// Throws Error(kInvalidArgument) for an unknown backend name.
std::unique_ptr<Backend> make_backend(boost::asio::io_context& ioc, const BackendOptions& opt);

std::unique_ptr<Backend> make_openai_backend(boost::asio::io_context& ioc,
                                             const BackendOptions& opt);
// gRPC: `url` gives host:port; `endpoint` is "text" (default) or "chat" (the prompt as one user
// message, rendered with the model's chat template). Throws when the server is not reachable.
std::unique_ptr<Backend> make_grpc_backend(boost::asio::io_context& ioc, const BackendOptions& opt);
// The served model's name from GetModelInfo.
std::string grpc_model_name(const BackendOptions& opt);

// One streamed chunk of an OpenAI SSE response, reduced to what the benchmark needs (exposed for
// tests). Returns false when `data` is not a JSON object.
struct OpenAiChunk {
  bool is_done = false;  // "[DONE]"
  std::string text;      // choices[0].text or choices[0].delta.content
  std::string finish_reason;
  int64_t prompt_tokens = -1;  // usage, when the chunk carries it
  int64_t completion_tokens = -1;
  std::string error;  // {"error": {"message": ...}} sent after the headers
};
bool parse_openai_chunk(std::string_view data, OpenAiChunk& out);

}  // namespace macserve::loadgen
