// The request checks every front end shares (request_fields.h).
#include "macserve/openai/request_fields.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "json_fields.h"
#include "macserve/core/error.h"

namespace macserve::openai {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

template <class T>
std::optional<T> checked(const std::optional<Given<double>>& v, const char* field, double lo,
                         double hi, bool lo_open = false) {
  if (!v) return std::nullopt;
  return static_cast<T>(check_number(field, *v, lo, hi, lo_open));
}

[[noreturn]] void fail_context(const ServedModel& model, const char* param, int64_t prompt_len,
                               int64_t max_tokens, bool explicit_max_tokens) {
  const bool chat = std::string_view(param) == "messages";
  std::string msg;
  if (explicit_max_tokens) {
    msg = chat ? fmt::format(
                     "This model's maximum context length is {} tokens. However, you requested {} "
                     "tokens ({} in "
                     "the messages, {} in the completion). Please reduce the length of the "
                     "messages or "
                     "completion.",
                     model.max_model_len, prompt_len + max_tokens, prompt_len, max_tokens)
               : fmt::format(
                     "This model's maximum context length is {} tokens. However, you requested {} "
                     "tokens ({} in "
                     "your prompt; {} for the completion). Please reduce your prompt; or "
                     "completion length.",
                     model.max_model_len, prompt_len + max_tokens, prompt_len, max_tokens);
  } else {
    msg = fmt::format(
        "This model's maximum context length is {} tokens. However, your {} resulted in {} tokens, "
        "which leaves no room for the completion. Please reduce the length of the {}.",
        model.max_model_len, chat ? "messages" : "prompt", prompt_len,
        chat ? "messages" : "prompt");
  }
  ApiError e = ApiError::invalid(std::move(msg), param);
  e.code = "context_length_exceeded";
  throw ApiException{std::move(e)};
}

// prompt_len + max_tokens must fit the context; without an explicit value, whatever fits.
int32_t resolve_max_tokens(const ServedModel& model, const char* param, int64_t prompt_len,
                           std::optional<int64_t> requested) {
  const int64_t ctx = model.max_model_len;
  if (requested) {
    if (ctx > 0 && prompt_len + *requested > ctx)
      fail_context(model, param, prompt_len, *requested, true);
    return static_cast<int32_t>(*requested);
  }
  if (ctx <= 0)
    return static_cast<int32_t>(
        model.max_output_tokens > 0 ? std::min(model.max_output_tokens, kInt32Max) : 16);
  if (prompt_len >= ctx) fail_context(model, param, prompt_len, 0, false);
  int64_t m = ctx - prompt_len;
  if (model.max_output_tokens > 0) m = std::min(m, model.max_output_tokens);
  return static_cast<int32_t>(std::min(m, kInt32Max));
}

}  // namespace

void fail(std::string message, std::string param) {
  throw ApiException{ApiError::invalid(std::move(message), std::move(param))};
}

double check_number(const std::string& field, const Given<double>& v, double lo, double hi,
                    bool lo_open) {
  const double d = v.value;
  if (!std::isfinite(d) || d > hi)
    fail(fmt::format("Invalid '{}': decimal above maximum value. Expected a value <= {}, but got "
                     "{} instead.",
                     field, hi, v.text),
         field);
  if (d < lo || (lo_open && d == lo))
    fail(fmt::format("Invalid '{}': decimal below minimum value. Expected a value {} {}, but got "
                     "{} instead.",
                     field, lo_open ? ">" : ">=", lo, v.text),
         field);
  return d;
}

int64_t check_int(const std::string& field, const Given<int64_t>& v, int64_t lo, int64_t hi) {
  if (v.value > hi)
    fail(fmt::format("Invalid '{}': integer above maximum value. Expected a value <= {}, but got "
                     "{} instead.",
                     field, hi, v.text),
         field);
  if (v.value < lo)
    fail(fmt::format("Invalid '{}': integer below minimum value. Expected a value >= {}, but got "
                     "{} instead.",
                     field, lo, v.text),
         field);
  return v.value;
}

void check_token_id(int64_t id, const ServedModel& model, const std::string& param) {
  if (id < 0 || id >= model.tokenizer->vocab_size())
    fail(fmt::format("Invalid token id {} in '{}': the vocabulary has {} tokens.", id, param,
                     model.tokenizer->vocab_size()),
         param);
}

sampling::SamplingParams build_sampling(const SamplingFields& f, const ServedModel& model) {
  sampling::SamplingParams p;
  p.temperature = checked<float>(f.temperature, "temperature", 0.0, 2.0).value_or(1.0f);
  p.top_p = checked<float>(f.top_p, "top_p", 0.0, 1.0, /*lo_open=*/true).value_or(1.0f);
  p.top_k = f.top_k ? static_cast<int32_t>(check_int("top_k", *f.top_k, -1, kInt32Max)) : 0;
  p.min_p = checked<float>(f.min_p, "min_p", 0.0, 1.0).value_or(0.0f);
  p.repetition_penalty =
      checked<float>(f.repetition_penalty, "repetition_penalty", 0.0, 10.0, true).value_or(1.0f);
  p.presence_penalty =
      checked<float>(f.presence_penalty, "presence_penalty", -2.0, 2.0).value_or(0.0f);
  p.frequency_penalty =
      checked<float>(f.frequency_penalty, "frequency_penalty", -2.0, 2.0).value_or(0.0f);
  for (const auto& [id, bias] : f.logit_bias) {
    check_token_id(id.value, model, "logit_bias");
    const double b = bias.value;
    if (!(b >= -100.0 && b <= 100.0))
      fail(fmt::format("Invalid value for 'logit_bias[\"{}\"]': expected a number in [-100, 100], "
                       "but got {}.",
                       id.text, bias.text),
           "logit_bias");
    p.logit_bias.emplace_back(static_cast<int32_t>(id.value), static_cast<float>(b));
  }
  p.seed = f.seed;
  p.min_tokens =
      f.min_tokens ? static_cast<int32_t>(check_int("min_tokens", *f.min_tokens, 0, kInt32Max)) : 0;
  if (f.stop.size() > kMaxStopStrings)
    fail(fmt::format("Invalid 'stop': array too long. Expected an array with maximum length {}, "
                     "but got an array "
                     "with length {} instead.",
                     kMaxStopStrings, f.stop.size()),
         "stop");
  for (const auto& s : f.stop)
    if (s.empty()) fail("Invalid 'stop': stop strings must not be empty.", "stop");
  p.stop = f.stop;
  for (const auto& id : f.stop_token_ids) {
    check_token_id(check_int("stop_token_ids", id, 0, kInt32Max), model, "stop_token_ids");
    p.stop_token_ids.push_back(static_cast<int32_t>(id.value));
  }
  p.ignore_eos = f.ignore_eos.value_or(false);
  p.skip_special_tokens = f.skip_special_tokens.value_or(true);
  return p;
}

int64_t check_max_tokens(const Given<int64_t>& v, const char* name, const ServedModel& model) {
  check_int(name, v, 1, std::numeric_limits<int64_t>::max());
  const int64_t cap = model.max_output_tokens > 0 ? model.max_output_tokens
                      : model.max_model_len > 0   ? model.max_model_len
                                                  : kInt32Max;
  if (v.value > std::min(cap, kInt32Max))
    fail(fmt::format("Invalid '{}': integer above maximum value. This model supports at most {} "
                     "completion tokens, "
                     "but got {} instead.",
                     name, std::min(cap, kInt32Max), v.text),
         name);
  return v.value;
}

engine::Request make_request(std::vector<int32_t> prompt_ids,
                             const sampling::SamplingParams& params, int32_t n,
                             std::optional<int64_t> max_tokens, const char* prompt_param,
                             const ServedModel& model) {
  engine::Request r;
  r.params = params;
  r.params.max_tokens =
      resolve_max_tokens(model, prompt_param, static_cast<int64_t>(prompt_ids.size()), max_tokens);
  if (r.params.min_tokens > r.params.max_tokens)
    fail(fmt::format("Invalid 'min_tokens': {} is more than the {} completion tokens allowed.",
                     r.params.min_tokens, r.params.max_tokens),
         "min_tokens");
  try {
    r.params.validate();  // backstop: the engine rejects what its own checks reject
  } catch (const Error& e) {
    fail(detail::sanitize_utf8(e.what()), "");
  }
  r.prompt_ids = std::move(prompt_ids);
  r.n = n;
  return r;
}

bool is_known_role(std::string_view role) {
  static constexpr std::array<std::string_view, 6> kRoles = {"system",    "developer", "user",
                                                             "assistant", "tool",      "function"};
  return std::find(kRoles.begin(), kRoles.end(), role) != kRoles.end();
}

PromptIds render_chat_messages(const std::vector<chat::ChatMessage>& messages,
                               bool add_generation_prompt, bool add_special,
                               const nlohmann::ordered_json& extra, const ServedModel& model) {
  if (model.chat_template == nullptr)
    fail(
        "This model has no chat template, so chat requests cannot be formatted: use "
        "/v1/completions with a "
        "prompt, or start the server with --chat-template.",
        "messages");
  PromptIds out;
  try {
    out.text = chat::apply_chat_template(*model.chat_template, messages, add_generation_prompt,
                                         model.bos_token, model.eos_token, extra);
  } catch (const Error& e) {  // raise_exception() in the template, limits, type errors
    fail(fmt::format("The chat template could not format these messages: {}",
                     detail::sanitize_utf8(e.what())),
         "messages");
  }
  out.ids = model.tokenizer->encode(out.text, add_special);
  return out;
}

PromptIds text_prompt(std::string text, const ServedModel& model, bool add_special) {
  PromptIds p;
  p.ids = model.tokenizer->encode(text, add_special);
  p.text = std::move(text);
  return p;
}

}  // namespace macserve::openai
