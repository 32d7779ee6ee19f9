// Request fields shared by every front end (HTTP JSON in prepare(), gRPC in server/grpc): the
// same ranges, defaults and error wording for each field whatever the wire format, the chat
// template rendering, and the context-length check. Failures throw ApiException naming the field.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "macserve/chat/chat_template.h"
#include "macserve/openai/protocol.h"
#include "macserve/request/request.h"

namespace macserve::openai {

// Thrown by the checks; prepare() returns its error, the gRPC service maps it onto a status code.
struct ApiException {
  ApiError error;
};
// Throws ApiException(400, message, param).
[[noreturn]] void fail(std::string message, std::string param);

inline constexpr int64_t kMaxN = 128;           // completions per prompt
inline constexpr int64_t kMaxTopLogprobs = 20;  // alternatives per token
inline constexpr std::size_t kMaxStopStrings = 16;

// A value as the client sent it: `text` is how it is shown in error messages.
template <class T>
struct Given {
  T value{};
  std::string text;
};

// The sampling fields of a request; unset fields take OpenAI's/vLLM's defaults.
struct SamplingFields {
  std::optional<Given<double>> temperature, top_p, min_p, repetition_penalty, presence_penalty,
      frequency_penalty;
  std::optional<Given<int64_t>> top_k, min_tokens;
  std::vector<std::pair<Given<int64_t>, Given<double>>> logit_bias;  // token id -> bias
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  std::vector<Given<int64_t>> stop_token_ids;
  std::optional<bool> ignore_eos, skip_special_tokens;
};

// Range checks and defaults -> SamplingParams (max_tokens and logprobs are set by the caller).
sampling::SamplingParams build_sampling(const SamplingFields& f, const ServedModel& model);

// Range checks with OpenAI's wording ("Invalid 'x': decimal above maximum value. ...").
double check_number(const std::string& field, const Given<double>& v, double lo, double hi,
                    bool lo_open = false);
int64_t check_int(const std::string& field, const Given<int64_t>& v, int64_t lo, int64_t hi);
// Token ids given by the client must name vocabulary entries.
void check_token_id(int64_t id, const ServedModel& model, const std::string& param);

// A requested max_tokens (field `name`) within --max-output-tokens and the context.
int64_t check_max_tokens(const Given<int64_t>& v, const char* name, const ServedModel& model);

// One engine request for a prompt: max_tokens resolved against the context (400
// context_length_exceeded naming `prompt_param`, "prompt" or "messages", with HTTP's message),
// min_tokens <= max_tokens, and the engine's own SamplingParams::validate() as a backstop.
engine::Request make_request(std::vector<int32_t> prompt_ids,
                             const sampling::SamplingParams& params, int32_t n,
                             std::optional<int64_t> max_tokens, const char* prompt_param,
                             const ServedModel& model);

struct PromptIds {
  std::vector<int32_t> ids;
  std::string text;  // the prompt as text (rendered chat, given string, or decoded ids)
};

// system | developer | user | assistant | tool | function.
bool is_known_role(std::string_view role);
// Chat messages rendered with the model's template (400 without one or when the template fails),
// then tokenized; `extra` holds more template kwargs (tools, chat_template_kwargs).
PromptIds render_chat_messages(const std::vector<chat::ChatMessage>& messages,
                               bool add_generation_prompt, bool add_special,
                               const nlohmann::ordered_json& extra, const ServedModel& model);
// A text prompt tokenized (add_special: BOS/EOS as the tokenizer adds them).
PromptIds text_prompt(std::string text, const ServedModel& model, bool add_special);

}  // namespace macserve::openai
