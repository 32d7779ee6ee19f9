// A compiled PCRE2 pattern (UTF + Unicode properties, JIT when available) for the pre-tokenizer
// regexes of tokenizer.json files, which rely on look-ahead and \p{L}/\p{N} classes. Matching is
// thread-safe: per-thread match data, no state in the object after construction.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

struct pcre2_real_code_8;

namespace macserve::tokenizer {

using Span = std::pair<std::size_t, std::size_t>;  // [begin, end) byte offsets

// One character that HF's Digits pre-tokenizer splits at: Rust's char::is_numeric, whose Unicode
// tables (17.0) have a few digits more than Oniguruma's \p{N}.
inline constexpr const char* kRustNumericClass = R"([\p{N}\x{11DE0}-\x{11DE9}\x{16FF4}-\x{16FF6}])";

class Regex {
 public:
  // literal: match `pattern` as plain text (HF Split {"String": ...}). Throws Error(kInvalidModel)
  // when the pattern does not compile.
  explicit Regex(std::string_view pattern, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  // Appends the non-overlapping matches of `subject` (valid UTF-8), left to right. After an empty
  // match the search resumes one character later, as Oniguruma (HF's engine) does.
  void find_all(std::string_view subject, std::vector<Span>* out) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  pcre2_real_code_8* code_ = nullptr;
};

}  // namespace macserve::tokenizer
