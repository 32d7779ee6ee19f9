// HF decoders: turn the vocabulary strings of a token list back into text. Each step maps the
// list of token strings to a new list (HF decode_chain); the result is their concatenation.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pre_tokenizer.h"
#include "regex.h"

namespace macserve::tokenizer {

enum class DecoderKind { kByteLevel, kReplace, kByteFallback, kFuse, kStrip, kMetaspace };

struct DecoderStep {
  DecoderKind kind = DecoderKind::kFuse;
  std::shared_ptr<const Regex> pattern;  // kReplace
  std::string content;                   // kReplace: replacement; kStrip / kMetaspace: the char
  std::size_t start = 0;                 // kStrip: leading chars to drop
  std::size_t stop = 0;                  // kStrip: trailing chars to drop
  PrependScheme prepend_scheme = PrependScheme::kAlways;  // kMetaspace
};

std::string run_decoders(const std::vector<DecoderStep>& steps, std::vector<std::string> tokens);

// "<0xNN>" (hex digits of either case, as HF's ByteFallback decoder reads them) -> NN, else -1.
int parse_byte_token(std::string_view token);

}  // namespace macserve::tokenizer
