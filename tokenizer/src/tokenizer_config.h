// tokenizer_config.json (and chat_template.jinja) beside a tokenizer: the chat template, BOS/EOS
// token strings and add_bos_token / add_eos_token.
#pragma once

#include <optional>
#include <string>

namespace macserve::tokenizer {

struct TokenizerConfig {
  std::string chat_template;  // empty when none
  std::optional<std::string> bos_token;
  std::optional<std::string> eos_token;
  std::optional<bool> add_bos_token;
  std::optional<bool> add_eos_token;
};

// Reads `dir`/tokenizer_config.json when present (a default config otherwise). chat_template may
// be a string or a list of {name, template} (the "default" one is taken); token fields may be
// strings or {"content": ...} objects. Throws Error(kInvalidModel) naming the file when it is
// not valid.
TokenizerConfig read_tokenizer_config(const std::string& dir);

// The whole file as bytes; throws Error(kNotFound) naming it when it cannot be read.
std::string read_file(const std::string& path);

}  // namespace macserve::tokenizer
