// Chat templates: a Jinja interpreter for the Hugging Face `chat_template` of tokenizer_config.json
// (and GGUF's tokenizer.chat_template). Rendering equals transformers' apply_chat_template, which
// renders with jinja2's ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
// loopcontrols) plus its own tojson/raise_exception/strftime_now/namespace globals: byte for byte
// on the fixtures in tests/fixtures/chat_template.
//
// Templates are untrusted input. parse() and render() never crash or hang: every failure, be it
// a syntax error, raise_exception() in the template, an undefined variable used in arithmetic or
// a runaway loop, is a macserve::Error (kInvalidArgument, or kResourceExhausted for the limits
// below) whose message names the line and column in the template.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace macserve::chat {

struct ChatMessage {
  std::string role;
  std::string content;
  // More message keys (tool_calls, name, tool_call_id, reasoning_content, ...). They override
  // role/content of the same name; null values drop the key, as transformers drops None.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
};

struct RenderLimits {
  // Largest rendered text (and any string built on the way), plus twice the text in the
  // context, so long conversations always fit while a template alone cannot blow up.
  size_t max_output_bytes = size_t{4} << 20;
  // Evaluation steps (expressions, statements, loop iterations, 1 per 64 bytes written), plus
  // 1000 per value in the context, so that rendering 100k messages is never cut short.
  uint64_t max_steps = 5'000'000;
};

class ChatTemplate {
 public:
  // Throws macserve::Error on syntax errors, unknown filters/tests and unsupported tags.
  static ChatTemplate parse(const std::string& source);

  // context: the template's variables (messages, add_generation_prompt, bos_token, tools, ...).
  // Pass an ordered_json so dict key order is preserved as in Python (tojson shows it); a
  // nlohmann::json converts implicitly, with its keys sorted. "__macserve_now__": "YYYY-MM-DD"
  // fixes the date strftime_now() sees (tests); otherwise it is the local time, as in Python.
  // Safe to call from several threads at once.
  std::string render(const nlohmann::ordered_json& context, const RenderLimits& limits = {}) const;

  const std::string& source() const;

 private:
  struct Impl;
  explicit ChatTemplate(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// transformers' apply_chat_template(messages, tokenize=False): the context holds messages
// (null-valued keys dropped; reasoning_content/thinking/reasoning aliased as transformers does),
// tools=None, documents=None, add_generation_prompt, bos_token, eos_token, then `extra` (an
// object of more template kwargs such as tools or enable_thinking) on top.
std::string apply_chat_template(
    const ChatTemplate& t, const std::vector<ChatMessage>& messages, bool add_generation_prompt,
    const std::string& bos_token, const std::string& eos_token,
    const nlohmann::ordered_json& extra = nlohmann::ordered_json::object());

}  // namespace macserve::chat
