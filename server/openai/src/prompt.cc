// Completions prompts (string, strings, ids, lists of ids) -> token ids.
#include <limits>

#include <fmt/format.h>

#include "mapping.h"

namespace macserve::openai::detail {
namespace {

PromptIds ids_prompt(const json& ids, const ServedModel& model, const std::string& where) {
  PromptIds p;
  p.ids.reserve(ids.size());
  for (std::size_t k = 0; k < ids.size(); ++k) {
    const std::string at = fmt::format("{}[{}]", where, k);
    const int64_t id = as_int(ids[k], at, 0, std::numeric_limits<int32_t>::max());
    check_token_id(id, model, "prompt");
    p.ids.push_back(static_cast<int32_t>(id));
  }
  p.text = model.tokenizer->decode(p.ids, /*skip_special=*/false);
  return p;
}

}  // namespace

std::vector<PromptIds> parse_prompts(const json& body, const ServedModel& model, bool add_special) {
  const auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) fail("Missing required parameter: 'prompt'.", "prompt");
  const json& prompt = *it;
  std::vector<PromptIds> out;
  if (prompt.is_string()) {
    out.push_back(text_prompt(prompt.get<std::string>(), model, add_special));
  } else if (!prompt.is_array()) {
    fail(
        "Invalid type for 'prompt': expected a string, an array of strings, an array of token ids "
        "or an array of "
        "arrays of token ids.",
        "prompt");
  } else if (prompt.empty()) {
    fail("Invalid 'prompt': empty array. Expected at least one prompt.", "prompt");
  } else if (prompt[0].is_number()) {
    out.push_back(ids_prompt(prompt, model, "prompt"));
  } else if (prompt[0].is_string()) {
    for (std::size_t i = 0; i < prompt.size(); ++i) {
      if (!prompt[i].is_string())
        fail(fmt::format("Invalid type for 'prompt[{}]': expected a string like the other prompts.",
                         i),
             "prompt");
      out.push_back(text_prompt(prompt[i].get<std::string>(), model, add_special));
    }
  } else if (prompt[0].is_array()) {
    for (std::size_t i = 0; i < prompt.size(); ++i) {
      const std::string at = fmt::format("prompt[{}]", i);
      if (!prompt[i].is_array())
        fail(fmt::format("Invalid type for '{}': expected an array of token ids.", at), "prompt");
      out.push_back(ids_prompt(prompt[i], model, at));
    }
  } else {
    fail("Invalid type for 'prompt[0]': expected a string, a token id or an array of token ids.",
         "prompt");
  }
  for (std::size_t i = 0; i < out.size(); ++i)
    if (out[i].ids.empty())
      fail(out.size() == 1
               ? std::string("The prompt is empty: it must contain at least one token.")
               : fmt::format("Prompt {} is empty: it must contain at least one token.", i),
           "prompt");
  return out;
}

}  // namespace macserve::openai::detail
