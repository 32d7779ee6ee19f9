// Loads a SentencePiece tokenizer.model (libsentencepiece stays inside sentencepiece_tokenizer.cc).
#pragma once

#include <memory>
#include <string>

#include "macserve/tokenizer/tokenizer.h"
#include "tokenizer_config.h"

namespace macserve::tokenizer {

// add_bos_token defaults to true (Llama 2 style), add_eos_token to false. Throws
// Error(kInvalidModel) naming `path` when it is not a SentencePiece model.
std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path,
                                                    const TokenizerConfig& config);

}  // namespace macserve::tokenizer
