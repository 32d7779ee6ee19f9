// Fuzz target: chat templates are untrusted text from model repositories. Arbitrary bytes are
// parsed as a template and rendered with a small fixed context; any input may be rejected with
// macserve::Error, none may crash, hang or allocate without bound. The render limits are tight
// so that the replay of thousands of mutations stays quick.
#include <cstddef>
#include <cstdint>
#include <string>

#include "macserve/chat/chat_template.h"
#include "macserve/core/error.h"

namespace {

const nlohmann::ordered_json& context() {
  static const nlohmann::ordered_json ctx = nlohmann::ordered_json::parse(R"({
    "messages": [
      {"role": "system", "content": "You are helpful."},
      {"role": "user", "content": "Hi {{ x }} \u00e9\u4f60\ud83c\udf0d"},
      {"role": "assistant", "content": "<think>hm</think>Hello",
       "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
      {"role": "tool", "content": "42"}
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
    "add_generation_prompt": true, "bos_token": "<s>", "eos_token": "</s>",
    "__macserve_now__": "2024-07-26"
  })");
  return ctx;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace macserve;
  const std::string source(reinterpret_cast<const char*>(data), size);
  chat::RenderLimits limits;
  limits.max_output_bytes = 1 << 16;
  limits.max_steps = 100000;
  try {
    const chat::ChatTemplate t = chat::ChatTemplate::parse(source);
    t.render(context(), limits);
  } catch (const Error&) {
  }
  return 0;
}
