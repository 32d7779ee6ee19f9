// Chat messages (OpenAI shape) -> chat::ChatMessage -> the model's template -> token ids.
#include <string_view>

#include <fmt/format.h>

#include "macserve/core/error.h"
#include "mapping.h"

namespace macserve::openai::detail {
namespace {

// A content part array: only text parts; their texts are joined with "\n" as vLLM does.
std::string join_text_parts(const json& parts, const std::string& where) {
  std::string text;
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const json& part = parts[k];
    const std::string at = fmt::format("{}[{}]", where, k);
    if (!part.is_object()) fail(fmt::format("Invalid type for '{}': expected an object.", at), at);
    const auto type = get_string(part, "type");
    if (!type) fail(fmt::format("Missing required parameter: '{}.type'.", at), at + ".type");
    if (*type != "text")
      fail(fmt::format(
               "Invalid value '{}' for '{}.type': this model accepts only 'text' content parts.",
               sanitize_utf8(*type), at),
           at + ".type");
    const auto t = get_string(part, "text");
    if (!t) fail(fmt::format("Missing required parameter: '{}.text'.", at), at + ".text");
    if (k > 0) text += '\n';
    text += *t;
  }
  return text;
}

chat::ChatMessage parse_message(const json& m, std::size_t i) {
  const std::string where = fmt::format("messages[{}]", i);
  if (!m.is_object()) fail(fmt::format("Invalid type for '{}': expected an object.", where), where);
  const auto role_it = m.find("role");
  if (role_it == m.end() || role_it->is_null())
    fail(fmt::format("Missing required parameter: '{}.role'.", where), where + ".role");
  if (!role_it->is_string())
    fail(fmt::format("Invalid type for '{}.role': expected a string.", where), where + ".role");
  chat::ChatMessage msg;
  msg.role = role_it->get<std::string>();
  if (!is_known_role(msg.role))
    fail(
        fmt::format(
            "Invalid value '{}' for '{}.role': supported values are 'system', 'developer', 'user', "
            "'assistant', 'tool' and 'function'.",
            sanitize_utf8(msg.role), where),
        where + ".role");
  const auto content = m.find("content");
  if (content == m.end() || content->is_null()) {
    // Assistant turns may carry only tool_calls; transformers then drops the key (None).
    if (msg.role != "assistant")
      fail(fmt::format("Missing required parameter: '{}.content'.", where), where + ".content");
    msg.extra["content"] = nullptr;
  } else if (content->is_string()) {
    msg.content = content->get<std::string>();
  } else if (content->is_array()) {
    msg.content = join_text_parts(*content, where + ".content");
  } else {
    fail(fmt::format(
             "Invalid type for '{}.content': expected a string or an array of content parts.",
             where),
         where + ".content");
  }
  // Other keys (name, tool_calls, tool_call_id, reasoning_content, ...) reach the template as
  // given.
  for (const auto& [key, value] : m.items())
    if (key != "role" && key != "content") msg.extra[key] = value;
  return msg;
}

}  // namespace

PromptIds render_chat(const json& body, const ServedModel& model) {
  const auto it = body.find("messages");
  if (it == body.end() || it->is_null())
    fail("Missing required parameter: 'messages'.", "messages");
  if (!it->is_array())
    fail("Invalid type for 'messages': expected an array of messages.", "messages");
  if (it->empty())
    fail("Invalid 'messages': empty array. Expected an array with minimum length 1.", "messages");
  std::vector<chat::ChatMessage> messages;
  messages.reserve(it->size());
  for (std::size_t i = 0; i < it->size(); ++i) messages.push_back(parse_message((*it)[i], i));

  const bool add_generation_prompt = get_bool(body, "add_generation_prompt").value_or(true);
  const bool add_special = get_bool(body, "add_special_tokens").value_or(false);
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  if (const auto tools = body.find("tools"); tools != body.end() && !tools->is_null()) {
    if (!tools->is_array()) fail("Invalid type for 'tools': expected an array.", "tools");
    extra["tools"] = *tools;
  }
  if (const auto kw = body.find("chat_template_kwargs"); kw != body.end() && !kw->is_null()) {
    if (!kw->is_object())
      fail("Invalid type for 'chat_template_kwargs': expected an object.", "chat_template_kwargs");
    for (const auto& [key, value] : kw->items()) extra[key] = value;
  }
  return render_chat_messages(messages, add_generation_prompt, add_special, extra, model);
}

}  // namespace macserve::openai::detail
