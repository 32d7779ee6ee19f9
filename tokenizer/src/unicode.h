// UTF-8 helpers shared by every tokenizer backend: the one rule for ill-formed input (maximal
// subparts -> U+FFFD, as Python's errors='replace' and Rust's from_utf8_lossy), code point
// iteration, and Unicode normalization forms through utf8proc.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace macserve::tokenizer {

inline constexpr char32_t kReplacementChar = 0xFFFD;
inline constexpr std::string_view kReplacementUtf8 = "\xEF\xBF\xBD";

// Length of the well-formed code point at s[i] (1..4), or 0 when s[i..] starts an ill-formed
// sequence; `*subpart` then gets the length of its maximal subpart (>= 1), the bytes that one
// U+FFFD replaces.
std::size_t utf8_valid_length(std::string_view s, std::size_t i, std::size_t* subpart);

bool is_valid_utf8(std::string_view s);

// Every ill-formed sequence replaced by U+FFFD per maximal subpart; valid input is returned as is.
std::string sanitize_utf8(std::string_view s);

// Decodes the code point at s[*i] of VALID UTF-8 and advances *i.
char32_t next_code_point(std::string_view s, std::size_t* i);

void append_utf8(std::string* out, char32_t cp);

// Length in bytes of the UTF-8 sequence that starts with `lead` (1 for continuation bytes).
inline std::size_t utf8_seq_length(unsigned char lead) {
  if (lead < 0xC0) return 1;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) return 3;
  return 4;
}

enum class NormalForm { kNfc, kNfd, kNfkc, kNfkd };

// Normalizes valid UTF-8 (embedded NULs allowed).
std::string normalize_unicode(std::string_view s, NormalForm form);

// Unicode White_Space, as Rust's char::is_whitespace (used by added-token lstrip/rstrip).
bool is_unicode_whitespace(char32_t cp);
// Letters, marks, numbers and '_' (Rust's char::is_alphanumeric plus '_'): single_word tokens.
bool is_word_char(char32_t cp);

}  // namespace macserve::tokenizer
