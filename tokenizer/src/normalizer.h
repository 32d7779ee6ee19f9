// HF tokenizer.json normalizers that the supported model families use (NFC for Qwen, Prepend +
// Replace for SentencePiece-style Llama/Mistral), applied in order to each text segment between
// added tokens.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "regex.h"
#include "unicode.h"

namespace macserve::tokenizer {

enum class NormalizerKind { kUnicode, kPrepend, kReplace, kStrip };

struct NormalizerStep {
  NormalizerKind kind = NormalizerKind::kUnicode;
  NormalForm form = NormalForm::kNfc;    // kUnicode
  std::string text;                      // kPrepend: the prefix; kReplace: the replacement
  std::shared_ptr<const Regex> pattern;  // kReplace: what is replaced
  bool strip_left = false;               // kStrip
  bool strip_right = false;
};

// Runs the steps over valid UTF-8. Prepend leaves an empty string empty, as HF does.
std::string normalize(const std::vector<NormalizerStep>& steps, std::string s);

// Replaces every match of `pattern` in `s` by `with`.
std::string replace_all(const Regex& pattern, const std::string& s, std::string_view with);

}  // namespace macserve::tokenizer
