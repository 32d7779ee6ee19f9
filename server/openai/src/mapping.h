// Internal: the pieces prepare() and tokenize() share (messages -> chat prompt, prompt forms ->
// token ids, sampling fields -> SamplingParams).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "json_fields.h"
#include "macserve/sampling/sampling_params.h"

namespace macserve::openai::detail {

struct PromptIds {
  std::vector<int32_t> ids;
  std::string text;  // the prompt as text (rendered chat, given string, or decoded ids)
};

// Chat: `messages` (+ add_generation_prompt, chat_template_kwargs, tools, add_special_tokens)
// rendered with the model's template and tokenized (no special tokens added by default: the
// template has them). 400 on malformed messages, a missing template or a template error.
PromptIds render_chat(const json& body, const ServedModel& model);

// Completions: `prompt` as a string, list of strings, list of ids or list of lists of ids.
// add_special: whether text prompts get BOS/EOS as the tokenizer adds them.
std::vector<PromptIds> parse_prompts(const json& body, const ServedModel& model, bool add_special);

// Token ids given by the client must name vocabulary entries.
void check_token_id(int64_t id, const ServedModel& model, const std::string& param);

// The sampling fields both endpoints share (everything except max_tokens and logprobs).
sampling::SamplingParams parse_sampling(const json& body, const ServedModel& model);

// "This model's maximum context length is N tokens. However, ..." (400 context_length_exceeded).
[[noreturn]] void fail_context(const ServedModel& model, const char* param, int64_t prompt_len, int64_t max_tokens,
                               bool explicit_max_tokens);

}  // namespace macserve::openai::detail
