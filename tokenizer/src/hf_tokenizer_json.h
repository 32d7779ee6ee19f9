// Loads a Hugging Face tokenizer.json into an HfTokenizer.
#pragma once

#include <memory>
#include <string>

#include "macserve/tokenizer/tokenizer.h"
#include "tokenizer_config.h"

namespace macserve::tokenizer {

// Throws Error(kInvalidModel, or kUnsupported for component types outside the supported set) with
// a message that starts with `path`.
std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::string& path,
                                                  const TokenizerConfig& config);

}  // namespace macserve::tokenizer
