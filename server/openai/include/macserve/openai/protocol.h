// OpenAI-compatible protocol: request bodies -> engine requests, engine outputs -> response JSON
// and streaming chunks. Transport-free (no sockets, no threads): the HTTP layer (server/http)
// calls these functions and does auth, routing, limits and SSE framing itself.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "macserve/chat/chat_template.h"
#include "macserve/request/request.h"
#include "macserve/tokenizer/tokenizer.h"

namespace macserve::openai {

// An error in OpenAI's envelope: {"error": {"message", "type", "param", "code"}}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";  // | authentication_error | not_found_error | ...
  std::string param;                           // empty -> null
  std::string code;                            // empty -> null
  std::string to_json() const;

  static ApiError invalid(std::string message, std::string param = {});
  static ApiError internal();  // 500 without details
};

// The status and envelope for a request the engine finished with FinishReason::kError
// (ErrorKind -> 400 / 400 context_length_exceeded / 429 / 503 / 500 without internal details).
ApiError error_from_engine(const engine::RequestOutput& out);

// What the protocol layer needs to know about the model being served.
struct ServedModel {
  std::string name;  // --served-model-name (the "model" field)
  const tokenizer::Tokenizer* tokenizer = nullptr;
  const chat::ChatTemplate* chat_template = nullptr;  // null: chat requests get a 400
  std::string bos_token, eos_token;                   // strings given to the chat template
  int64_t max_model_len = 0;                          // prompt + max_tokens must fit
  int64_t max_output_tokens = 0;                      // cap on max_tokens (0: max_model_len)
  int64_t created = 0;                                // unix time shown by /v1/models
};

enum class Endpoint { kChatCompletions, kCompletions };

struct Prepared {
  Endpoint endpoint = Endpoint::kCompletions;
  std::string model;  // echoed in responses
  // One engine request per prompt (completions accept a list of prompts); each carries `n`.
  // Choice index of completion i of prompt p = p * n + i. Request ids are left empty: the HTTP
  // layer fills them.
  std::vector<engine::Request> requests;
  std::vector<std::string> prompt_texts;  // decoded prompts, for `echo`
  int32_t n = 1;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions
  bool logprobs = false;       // logprobs asked for
  int32_t top_logprobs = 0;    // alternatives per token
};

// Parses and validates a JSON body for the endpoint and maps it onto engine requests (chat:
// renders the chat template, then tokenizes without adding special tokens). Every problem is an
// ApiError naming the field: bad JSON, wrong type, out-of-range value, unknown model (404),
// prompt + max_tokens over the context (400 context_length_exceeded).
std::variant<Prepared, ApiError> prepare(Endpoint endpoint, std::string_view body,
                                         const ServedModel& model);

// Builds the response of one prepared request from the engine's outputs.
class ResponseBuilder {
 public:
  // `id` gets the endpoint's prefix ("chatcmpl-" / "cmpl-") unless it already starts with it.
  // `prepared` and `model` must outlive the builder.
  ResponseBuilder(const Prepared& prepared, const ServedModel& model, std::string id,
                  int64_t created);
  ~ResponseBuilder();
  ResponseBuilder(ResponseBuilder&&) noexcept;
  ResponseBuilder& operator=(ResponseBuilder&&) noexcept;

  // Feeds one output of engine request `request_index` (Prepared::requests order). When
  // streaming, appends the chunk JSON texts to send (without "data: " framing); the first output
  // of each choice is preceded by the role chunk (chat) and the echo (completions).
  void add(size_t request_index, const engine::RequestOutput& out,
           std::vector<std::string>* chunks);
  // After every request finished: the usage chunk when include_usage (streaming).
  void finish_stream(std::vector<std::string>* chunks);
  // After every request finished, not streaming: the chat.completion / text_completion object.
  std::string response() const;
  // The first engine error seen (the request failed), if any. Outputs of a failed choice add no
  // chunks; the caller sends the error instead.
  const std::optional<ApiError>& error() const { return error_; }
  int64_t prompt_tokens() const;
  int64_t completion_tokens() const;

 private:
  struct Choice;
  const Prepared* prepared_;
  const ServedModel* model_;
  std::string id_;
  int64_t created_;
  std::vector<Choice> choices_;
  std::vector<int64_t> prompt_tokens_;  // per engine request
  std::optional<ApiError> error_;
};

// vLLM's /tokenize and /detokenize shapes; /v1/models list.
std::variant<std::string, ApiError> tokenize(std::string_view body, const ServedModel& model);
std::variant<std::string, ApiError> detokenize(std::string_view body, const ServedModel& model);
std::string models_list(const ServedModel& model);

}  // namespace macserve::openai
