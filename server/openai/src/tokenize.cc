// vLLM's /tokenize and /detokenize, and the /v1/models list.
#include <limits>

#include <fmt/format.h>

#include "macserve/core/error.h"
#include "mapping.h"

namespace macserve::openai {
namespace {

using detail::json;

}  // namespace

// {"prompt": str, "add_special_tokens": true} or {"messages": [...], "add_generation_prompt": true,
// "add_special_tokens": false, "chat_template_kwargs": {...}} -> {"count", "max_model_len",
// "tokens"}.
std::variant<std::string, ApiError> tokenize(std::string_view body_text, const ServedModel& model) {
  return detail::guarded<std::string>([&]() -> std::string {
    if (model.tokenizer == nullptr) throw std::logic_error("ServedModel without a tokenizer");
    const json body = detail::parse_body(body_text);
    detail::check_model(body, model);
    std::vector<int32_t> ids;
    if (const auto m = body.find("messages"); m != body.end() && !m->is_null()) {
      ids = detail::render_chat(body, model).ids;
    } else {
      const auto prompt = detail::get_string(body, "prompt");
      if (!prompt) detail::fail("Missing required parameter: 'prompt' (or 'messages').", "prompt");
      ids = model.tokenizer->encode(*prompt,
                                    detail::get_bool(body, "add_special_tokens").value_or(true));
    }
    const json out = {
        {"count", ids.size()}, {"max_model_len", model.max_model_len}, {"tokens", ids}};
    return detail::dump(out);
  });
}

// {"tokens": [ids]} -> {"prompt": text} (special tokens kept, as vLLM's decode does).
std::variant<std::string, ApiError> detokenize(std::string_view body_text,
                                               const ServedModel& model) {
  return detail::guarded<std::string>([&]() -> std::string {
    if (model.tokenizer == nullptr) throw std::logic_error("ServedModel without a tokenizer");
    const json body = detail::parse_body(body_text);
    detail::check_model(body, model);
    const auto it = body.find("tokens");
    if (it == body.end() || it->is_null())
      detail::fail("Missing required parameter: 'tokens'.", "tokens");
    if (!it->is_array())
      detail::fail("Invalid type for 'tokens': expected an array of token ids.", "tokens");
    std::vector<int32_t> ids;
    ids.reserve(it->size());
    for (const json& v : *it) {
      const int64_t id = detail::as_int(v, "tokens", 0, std::numeric_limits<int32_t>::max());
      check_token_id(id, model, "tokens");
      ids.push_back(static_cast<int32_t>(id));
    }
    return detail::dump(json{{"prompt", model.tokenizer->decode(ids, /*skip_special=*/false)}});
  });
}

std::string models_list(const ServedModel& model) {
  const nlohmann::ordered_json card = {{"id", model.name},
                                       {"object", "model"},
                                       {"created", model.created},
                                       {"owned_by", "macserve"},
                                       {"max_model_len", model.max_model_len}};
  return detail::dump_any(
      nlohmann::ordered_json{{"object", "list"}, {"data", nlohmann::ordered_json::array({card})}});
}

}  // namespace macserve::openai
