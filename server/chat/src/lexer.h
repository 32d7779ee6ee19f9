// Splits a template into tokens the way Jinja 3.1's lexer does with the options transformers
// uses (trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False): whitespace control
// (`-` strips, `+` keeps), lstrip of block/comment tags that start a line, the newline after a
// block tag dropped, comments removed and {% raw %} bodies passed through as text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace macserve::chat {

struct SourcePos {
  int line = 1;
  int column = 1;
};

enum class TokenKind {
  kData,           // template text
  kVariableBegin,  // {{
  kVariableEnd,    // }}
  kBlockBegin,     // {%
  kBlockEnd,       // %}
  kName,
  kString,    // text holds the unescaped value
  kInteger,   // int_value
  kFloat,     // float_value
  kOperator,  // text holds the operator, e.g. "//" or "("
  kEof,
};

struct Token {
  TokenKind kind = TokenKind::kEof;
  std::string text;
  int64_t int_value = 0;
  double float_value = 0.0;
  SourcePos pos;
};

// Throws macserve::Error (kInvalidArgument) with line and column on lexical errors. The last
// token is always kEof.
std::vector<Token> tokenize(std::string_view source);

// Jinja drops one trailing newline and turns \r\n and \r into \n before lexing.
std::string normalize_newlines(std::string_view source);

}  // namespace macserve::chat
