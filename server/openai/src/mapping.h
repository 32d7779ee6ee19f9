// Internal: the pieces prepare() and tokenize() share (messages -> chat prompt, prompt forms ->
// token ids, sampling fields -> SamplingParams).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "json_fields.h"
#include "macserve/sampling/sampling_params.h"

namespace macserve::openai::detail {

using openai::PromptIds;

// Chat: `messages` (+ add_generation_prompt, chat_template_kwargs, tools, add_special_tokens)
// rendered with the model's template and tokenized (no special tokens added by default: the
// template has them). 400 on malformed messages, a missing template or a template error.
PromptIds render_chat(const json& body, const ServedModel& model);

// Completions: `prompt` as a string, list of strings, list of ids or list of lists of ids.
// add_special: whether text prompts get BOS/EOS as the tokenizer adds them.
std::vector<PromptIds> parse_prompts(const json& body, const ServedModel& model, bool add_special);

// The sampling fields both endpoints share (everything except max_tokens and logprobs).
sampling::SamplingParams parse_sampling(const json& body, const ServedModel& model);

}  // namespace macserve::openai::detail
