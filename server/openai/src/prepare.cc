// prepare(): a chat or completions body -> validated engine requests.
#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "macserve/core/error.h"
#include "mapping.h"

namespace macserve::openai {
namespace {

using detail::fail;
using detail::get_bool;
using detail::get_int;
using detail::json;

// Completions per request (prompts x n): bounds what one small body can make the server allocate.
constexpr int64_t kMaxChoices = 4096;

// Fields only one endpoint has, and the ones we reject rather than silently ignore.
void parse_endpoint_fields(const json& body, Endpoint endpoint, Prepared& out) {
  if (endpoint == Endpoint::kChatCompletions) {
    out.logprobs = get_bool(body, "logprobs").value_or(false);
    const auto top = get_int(body, "top_logprobs", 0, kMaxTopLogprobs);
    if (top && !out.logprobs)
      fail("Invalid 'top_logprobs': 'logprobs' must be true when 'top_logprobs' is set.",
           "top_logprobs");
    out.top_logprobs = static_cast<int32_t>(top.value_or(0));
    if (const auto rf = body.find("response_format"); rf != body.end() && !rf->is_null()) {
      if (!rf->is_object())
        fail("Invalid type for 'response_format': expected an object.", "response_format");
      const auto type = detail::get_string(*rf, "type");
      if (type && *type != "text")
        fail(fmt::format("Invalid 'response_format': type '{}' is not supported; only 'text' is.",
                         detail::sanitize_utf8(*type)),
             "response_format");
    }
    if (const auto tc = body.find("tool_choice");
        tc != body.end() && !tc->is_null() && *tc != "none")
      fail(
          "Invalid 'tool_choice': tool calling is not supported; only 'none' is accepted (tools "
          "are shown to the "
          "model through the chat template, its reply is returned as text).",
          "tool_choice");
  } else {
    const auto k = get_int(body, "logprobs", 0, 5);
    out.logprobs = k.has_value();
    out.top_logprobs = static_cast<int32_t>(k.value_or(0));
    out.echo = get_bool(body, "echo").value_or(false);
    if (out.echo && out.logprobs)
      fail("Invalid 'echo': 'echo' together with 'logprobs' is not supported (no prompt logprobs).",
           "echo");
    if (const auto suffix = detail::get_string(body, "suffix"); suffix && !suffix->empty())
      fail("Invalid 'suffix': 'suffix' is not supported.", "suffix");
    if (const auto best_of = get_int(body, "best_of", 1, kMaxN); best_of && *best_of != out.n)
      fail("Invalid 'best_of': only best_of equal to n is supported.", "best_of");
  }
  out.stream = get_bool(body, "stream").value_or(false);
  if (const auto so = body.find("stream_options"); so != body.end() && !so->is_null()) {
    if (!out.stream)
      fail("Invalid 'stream_options': 'stream_options' is only allowed when 'stream' is true.",
           "stream_options");
    if (!so->is_object())
      fail("Invalid type for 'stream_options': expected an object.", "stream_options");
    out.include_usage = get_bool(*so, "include_usage").value_or(false);
  }
}

// max_completion_tokens (preferred, OpenAI's newer name) or max_tokens; nullopt: not given.
std::optional<int64_t> parse_max_tokens(const json& body, const ServedModel& model) {
  const char* name = "max_completion_tokens";
  auto v = detail::get_given_int(body, name);
  if (!v) {
    name = "max_tokens";
    v = detail::get_given_int(body, name);
  }
  if (!v) return std::nullopt;
  return check_max_tokens(*v, name, model);
}

Prepared prepare_or_throw(Endpoint endpoint, std::string_view body_text, const ServedModel& model) {
  if (model.tokenizer == nullptr) throw std::logic_error("ServedModel without a tokenizer");
  const json body = detail::parse_body(body_text);
  detail::check_model(body, model);
  Prepared out;
  out.endpoint = endpoint;
  out.model = model.name;
  out.n = static_cast<int32_t>(get_int(body, "n", 1, kMaxN).value_or(1));
  parse_endpoint_fields(body, endpoint, out);
  sampling::SamplingParams params = detail::parse_sampling(body, model);
  params.logprobs = out.logprobs ? out.top_logprobs : -1;
  const auto requested = parse_max_tokens(body, model);

  const bool chat = endpoint == Endpoint::kChatCompletions;
  std::vector<detail::PromptIds> prompts;
  if (chat)
    prompts.push_back(detail::render_chat(body, model));
  else
    prompts =
        detail::parse_prompts(body, model, get_bool(body, "add_special_tokens").value_or(true));

  if (static_cast<int64_t>(prompts.size()) * out.n > kMaxChoices)
    fail(fmt::format("Invalid 'prompt': {} prompts with n = {} ask for more than {} completions in "
                     "one request.",
                     prompts.size(), out.n, kMaxChoices),
         "prompt");
  for (auto& prompt : prompts) {
    out.requests.push_back(make_request(std::move(prompt.ids), params, out.n, requested,
                                        chat ? "messages" : "prompt", model));
    out.prompt_texts.push_back(std::move(prompt.text));
  }
  return out;
}

}  // namespace

std::variant<Prepared, ApiError> prepare(Endpoint endpoint, std::string_view body,
                                         const ServedModel& model) {
  return detail::guarded<Prepared>([&] { return prepare_or_throw(endpoint, body, model); });
}

}  // namespace macserve::openai
