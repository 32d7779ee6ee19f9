// HF pre-tokenizers: cut a normalized segment into the pieces that BPE runs on independently
// (Split by regex, ByteLevel, Digits, Metaspace), with HF's split behaviours. Pieces that end up
// empty are dropped, as HF does.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "regex.h"

namespace macserve::tokenizer {

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
enum class PrependScheme { kAlways, kFirst, kNever };
enum class PreTokenizerKind { kSplit, kByteLevel, kMetaspace };

struct PreTokenizerStep {
  PreTokenizerKind kind = PreTokenizerKind::kSplit;
  std::shared_ptr<const Regex>
      regex;  // kSplit (Digits are a Split on \p{N}); kMetaspace: the replacement
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;
  bool add_prefix_space = false;  // kByteLevel
  bool use_regex = true;          // kByteLevel: split with the GPT-2 regex first
  std::string replacement;        // kMetaspace, UTF-8 of one character
  PrependScheme prepend_scheme = PrependScheme::kAlways;
  bool split = true;  // kMetaspace
};

struct Piece {
  std::string text;
  bool at_start = false;  // begins at offset 0 of the input (Metaspace prepend_scheme "first")
};

// The GPT-2 pre-tokenizer regex (ByteLevel use_regex).
const std::shared_ptr<const Regex>& gpt2_regex();

// Replaces each piece by its sub-pieces, step after step.
void pre_tokenize(const std::vector<PreTokenizerStep>& steps, std::vector<Piece>* pieces);

}  // namespace macserve::tokenizer
