#include "lexer.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>

#include "bounds.h"
#include "macserve/core/error.h"
#include "unicode.h"

namespace macserve::chat {
namespace {

bool starts_with_at(std::string_view s, size_t at, std::string_view prefix) {
  return at <= s.size() && s.substr(at).substr(0, prefix.size()) == prefix;
}

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }
bool is_ascii_digit(char c) { return c >= '0' && c <= '9'; }

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Tokens inside {{ }} and {% %}; the bracket stack lets `}}` close a dict literal first.
class Lexer {
 public:
  explicit Lexer(std::string src) : src_(std::move(src)) {
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    while (pos_ < src_.size()) lex_root();
    emit(TokenKind::kEof, "", src_.size());
    return std::move(tokens_);
  }

 private:
  SourcePos pos_of(size_t offset) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), offset);
    const size_t line = static_cast<size_t>(it - line_starts_.begin());
    return {static_cast<int>(line), static_cast<int>(offset - line_starts_[line - 1] + 1)};
  }

  [[noreturn]] void fail(size_t offset, const std::string& msg) const {
    const SourcePos p = pos_of(offset);
    throw Error(
        ErrorCode::kInvalidArgument,
        fmt::format("chat template syntax error at line {}, column {}: {}", p.line, p.column, msg));
  }

  void emit(TokenKind kind, std::string text, size_t offset) {
    Token t;
    t.kind = kind;
    t.text = std::move(text);
    t.pos = pos_of(offset);
    tokens_.push_back(std::move(t));
  }

  size_t skip_space(size_t p) const {
    while (p < src_.size()) {
      size_t q = p;
      if (!is_py_space(utf8_next(src_, q))) break;
      p = q;
    }
    return p;
  }

  // Applies `-` (strip all whitespace before the tag) or lstrip_blocks (strip the indentation of
  // a block/comment tag that is alone at the start of its line) to the text before a tag.
  std::string_view strip_before(std::string_view text, char sign, bool is_variable) const {
    if (sign == '-') {
      size_t end = text.size();
      while (end > 0) {
        size_t start = 0;
        if (!is_py_space(utf8_prev(text, end, start))) break;
        end = start;
      }
      return text.substr(0, end);
    }
    if (sign == '+' || is_variable) return text;
    const size_t nl = text.rfind('\n');
    const size_t l_pos = nl == std::string_view::npos ? 0 : nl + 1;
    if (l_pos == 0 && !line_starting_) return text;
    if (l_pos == text.size()) return text;
    const std::string_view tail = text.substr(l_pos);
    for (size_t i = 0; i < tail.size();) {
      if (!is_py_space(utf8_next(tail, i))) return text;
    }
    return text.substr(0, l_pos);
  }

  void emit_data(std::string_view text, size_t offset) {
    if (!text.empty()) emit(TokenKind::kData, std::string(text), offset);
  }

  void lex_root() {
    size_t tag = src_.find('{', pos_);
    while (tag != std::string::npos && tag + 1 < src_.size() && src_[tag + 1] != '{' &&
           src_[tag + 1] != '%' && src_[tag + 1] != '#') {
      tag = src_.find('{', tag + 1);
    }
    if (tag == std::string::npos || tag + 1 >= src_.size()) {
      emit_data(std::string_view(src_).substr(pos_), pos_);
      pos_ = src_.size();
      return;
    }
    const char kind = src_[tag + 1];
    const char sign = tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+')
                          ? src_[tag + 2]
                          : '\0';
    size_t raw_end = 0;
    char raw_sign = '\0';
    const bool is_raw = kind == '%' && match_raw_begin(tag, raw_end, raw_sign);
    const std::string_view text(std::string_view(src_).substr(pos_, tag - pos_));
    emit_data(strip_before(text, is_raw ? raw_sign : sign, kind == '{'), pos_);
    const size_t body = tag + 2 + (sign != '\0' ? 1 : 0);
    line_starting_ = false;
    if (is_raw) {
      line_starting_ = src_[raw_end - 1] == '\n';
      lex_raw(raw_end);
    } else if (kind == '#') {
      lex_comment(body);
    } else {
      emit(kind == '%' ? TokenKind::kBlockBegin : TokenKind::kVariableBegin, "", tag);
      pos_ = body;
      lex_tag(kind == '%');
    }
  }

  bool match_raw_begin(size_t tag, size_t& end, char& sign) const {
    size_t p = tag + 2;
    if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
    p = skip_space(p);
    if (!starts_with_at(src_, p, "raw")) return false;
    p = skip_space(p + 3);
    if (starts_with_at(src_, p, "-%}")) {
      end = skip_space(p + 3);
      return true;
    }
    if (starts_with_at(src_, p, "%}")) {
      end = p + 2;
      return true;
    }
    return false;
  }

  // Matches `+%}`, `-%}\s*` or `%}\n?` (trim_blocks) at p.
  bool match_block_close(size_t p, size_t& end) const {
    if (starts_with_at(src_, p, "+%}")) {
      end = p + 3;
    } else if (starts_with_at(src_, p, "-%}")) {
      end = skip_space(p + 3);
    } else if (starts_with_at(src_, p, "%}")) {
      end = p + 2 + (starts_with_at(src_, p + 2, "\n") ? 1 : 0);
    } else {
      return false;
    }
    return true;
  }

  void lex_raw(size_t body) {
    for (size_t q = src_.find("{%", body); q != std::string::npos; q = src_.find("{%", q + 1)) {
      size_t p = q + 2;
      char sign = '\0';
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) sign = src_[p++];
      p = skip_space(p);
      if (!starts_with_at(src_, p, "endraw")) continue;
      size_t end = 0;
      if (!match_block_close(skip_space(p + 6), end)) continue;
      const std::string_view text = std::string_view(src_).substr(body, q - body);
      emit_data(strip_before(text, sign, false), body);
      line_starting_ = src_[end - 1] == '\n';
      pos_ = end;
      return;
    }
    fail(body, "Missing end of raw directive");
  }

  void lex_comment(size_t body) {
    const size_t close = src_.find("#}", body);
    if (close == std::string::npos) fail(body, "Missing end of comment tag");
    const char sign = close > body ? src_[close - 1] : '\0';
    size_t end = close + 2;
    if (sign == '-') {
      end = skip_space(end);
    } else if (sign != '+' && starts_with_at(src_, end, "\n")) {
      ++end;  // trim_blocks
    }
    line_starting_ = src_[end - 1] == '\n';
    pos_ = end;
  }

  bool match_tag_end(bool is_block, size_t& end) const {
    if (is_block) return match_block_close(pos_, end);
    if (starts_with_at(src_, pos_, "-}}")) {
      end = skip_space(pos_ + 3);
    } else if (starts_with_at(src_, pos_, "}}")) {
      end = pos_ + 2;
    } else {
      return false;
    }
    return true;
  }

  void lex_tag(bool is_block) {
    balance_.clear();
    while (pos_ < src_.size()) {
      size_t end = 0;
      if (balance_.empty() && match_tag_end(is_block, end)) {
        emit(is_block ? TokenKind::kBlockEnd : TokenKind::kVariableEnd, "", pos_);
        line_starting_ = src_[end - 1] == '\n';
        pos_ = end;
        return;
      }
      const size_t after_space = skip_space(pos_);
      if (after_space != pos_) {
        pos_ = after_space;
      } else if (!lex_number() && !lex_name() && !lex_string()) {
        lex_operator();
      }
    }
  }

  // (\d+_)*\d+ : digits with single underscores between them.
  size_t match_digits(size_t p) const {
    if (p >= src_.size() || !is_ascii_digit(src_[p])) return std::string::npos;
    while (p < src_.size()) {
      while (p < src_.size() && is_ascii_digit(src_[p])) ++p;
      if (p + 1 < src_.size() && src_[p] == '_' && is_ascii_digit(src_[p + 1])) {
        ++p;
      } else {
        break;
      }
    }
    return p;
  }

  size_t match_exponent(size_t p) const {
    if (p >= src_.size() || (src_[p] != 'e' && src_[p] != 'E')) return std::string::npos;
    ++p;
    if (p < src_.size() && (src_[p] == '+' || src_[p] == '-')) ++p;
    return match_digits(p);
  }

  size_t match_float(size_t p) const {
    if (p > 0 && src_[p - 1] == '.') return std::string::npos;
    const size_t int_end = match_digits(p);
    if (int_end == std::string::npos) return std::string::npos;
    size_t frac_end = std::string::npos;
    if (int_end < src_.size() && src_[int_end] == '.') frac_end = match_digits(int_end + 1);
    if (frac_end != std::string::npos) {
      const size_t e = match_exponent(frac_end);
      return e != std::string::npos ? e : frac_end;
    }
    return match_exponent(int_end);
  }

  // Python's integer literals: 0b/0o/0x prefixes, decimal without leading zeros, and zero.
  size_t match_integer(size_t p, int& base) const {
    const auto digits_of = [&](size_t q, auto is_digit) {
      size_t n = 0;
      while (q < src_.size()) {
        const size_t step = src_[q] == '_' ? 1 : 0;
        if (q + step >= src_.size() || !is_digit(src_[q + step])) break;
        q += step + 1;
        ++n;
      }
      return n > 0 ? q : std::string::npos;
    };
    if (src_[p] == '0' && p + 1 < src_.size()) {
      const char x = static_cast<char>(src_[p + 1] | 0x20);
      size_t e = std::string::npos;
      if (x == 'b') e = digits_of(p + 2, [](char c) { return c == '0' || c == '1'; });
      if (x == 'o') e = digits_of(p + 2, [](char c) { return c >= '0' && c <= '7'; });
      if (x == 'x') e = digits_of(p + 2, [](char c) { return hex_value(c) >= 0; });
      if (e != std::string::npos) {
        base = x == 'b' ? 2 : x == 'o' ? 8 : 16;
        return e;
      }
    }
    base = 10;
    if (src_[p] >= '1' && src_[p] <= '9') {
      const size_t e = digits_of(p + 1, is_ascii_digit);
      return e == std::string::npos ? p + 1 : e;
    }
    if (src_[p] != '0') return std::string::npos;
    const size_t e = digits_of(p + 1, [](char c) { return c == '0'; });
    return e == std::string::npos ? p + 1 : e;
  }

  bool lex_number() {
    const size_t start = pos_;
    const size_t float_end = match_float(start);
    std::string clean;
    if (float_end != std::string::npos) {
      for (size_t i = start; i < float_end; ++i) {
        if (src_[i] != '_') clean.push_back(src_[i]);
      }
      double d = 0;
      const auto res = std::from_chars(clean.data(), clean.data() + clean.size(), d);
      if (res.ec == std::errc::result_out_of_range) {
        const size_t e = clean.find_first_of("eE");
        d = e != std::string::npos && clean[e + 1] == '-' ? 0.0 : HUGE_VAL;
      }
      emit(TokenKind::kFloat, clean, start);
      tokens_.back().float_value = d;
      pos_ = float_end;
      return true;
    }
    int base = 10;
    const size_t int_end = match_integer(start, base);
    if (int_end == std::string::npos) return false;
    for (size_t i = start + (base == 10 ? 0 : 2); i < int_end; ++i) {
      if (src_[i] != '_') clean.push_back(src_[i]);
    }
    int64_t v = 0;
    const auto res = std::from_chars(clean.data(), clean.data() + clean.size(), v, base);
    if (res.ec != std::errc()) fail(start, "integer literal too large");
    emit(TokenKind::kInteger, clean, start);
    tokens_.back().int_value = v;
    pos_ = int_end;
    return true;
  }

  bool lex_name() {
    if (!is_name_start(src_[pos_])) return false;
    size_t e = pos_ + 1;
    while (e < src_.size() && is_name_char(src_[e])) ++e;
    emit(TokenKind::kName, src_.substr(pos_, e - pos_), pos_);
    pos_ = e;
    return true;
  }

  bool lex_string() {
    const char quote = src_[pos_];
    if (quote != '\'' && quote != '"') return false;
    size_t p = pos_ + 1;
    while (p < src_.size() && src_[p] != quote) p += src_[p] == '\\' ? 2 : 1;
    if (p >= src_.size())
      fail(pos_, fmt::format("unexpected char {} (unterminated string)", quote));
    emit(TokenKind::kString, unescape(pos_ + 1, p), pos_);
    pos_ = p + 1;
    return true;
  }

  // Python's unicode-escape decoding of a string literal's body.
  std::string unescape(size_t begin, size_t end) const {
    std::string out;
    for (size_t p = begin; p < end;) {
      if (src_[p] != '\\') {
        out.push_back(src_[p++]);
        continue;
      }
      p = unescape_one(p + 1, end, out);
    }
    return out;
  }

  size_t unescape_one(size_t p, size_t end, std::string& out) const {
    const char c = src_[p];
    static constexpr std::string_view kSimple = "\\\\''\"\"a\ab\bf\fn\nr\rt\tv\v";
    for (size_t k = 0; k < kSimple.size(); k += 2) {
      if (kSimple[k] == c) {
        out.push_back(kSimple[k + 1]);
        return p + 1;
      }
    }
    if (c == '\n') return p + 1;  // line continuation
    if (c >= '0' && c <= '7') {
      char32_t v = 0;
      size_t q = p;
      while (q < end && q < p + 3 && src_[q] >= '0' && src_[q] <= '7')
        v = v * 8 + (src_[q++] - '0');
      utf8_append(out, v);
      return q;
    }
    if (c == 'x' || c == 'u' || c == 'U') return unescape_hex(p, end, out);
    if (static_cast<unsigned char>(c) >= 0x80) {
      // Jinja backslash-escapes non-ASCII text before decoding, so "\é" reads as "\xe9".
      size_t q = p;
      const char32_t cp = utf8_next(src_, q);
      out += cp < 0x100     ? fmt::format("\\x{:02x}", static_cast<unsigned>(cp))
             : cp < 0x10000 ? fmt::format("\\u{:04x}", static_cast<unsigned>(cp))
                            : fmt::format("\\U{:08x}", static_cast<unsigned>(cp));
      return q;
    }
    out.push_back('\\');  // unknown escapes stay as written
    return p;
  }

  size_t unescape_hex(size_t p, size_t end, std::string& out) const {
    const char c = src_[p];
    const size_t n = c == 'x' ? 2 : c == 'u' ? 4 : 8;
    char32_t v = 0;
    for (size_t k = 1; k <= n; ++k) {
      const int h = p + k < end ? hex_value(src_[p + k]) : -1;
      if (h < 0) fail(p, fmt::format("truncated \\{}{} escape", c, std::string(n, 'X')));
      v = v * 16 + static_cast<char32_t>(h);
    }
    size_t next = p + n + 1;
    if (v >= 0xD800 && v <= 0xDBFF && starts_with_at(src_, next, "\\u") && next + 6 <= end) {
      char32_t lo = 0;
      for (size_t k = 2; k < 6; ++k)
        lo = lo * 16 + static_cast<char32_t>(std::max(0, hex_value(src_[next + k])));
      if (lo >= 0xDC00 && lo <= 0xDFFF) {
        v = 0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00);
        next += 6;
      }
    }
    if (v > 0x10FFFF) fail(p, "illegal Unicode character");
    if (v >= 0xD800 && v <= 0xDFFF) fail(p, "lone surrogate escapes are not supported");
    utf8_append(out, v);
    return next;
  }

  void lex_operator() {
    static constexpr std::string_view kTwo[] = {"//", "**", "==", "!=", ">=", "<="};
    for (std::string_view op : kTwo) {
      if (starts_with_at(src_, pos_, op)) {
        emit(TokenKind::kOperator, std::string(op), pos_);
        pos_ += 2;
        return;
      }
    }
    const char c = src_[pos_];
    if (std::strchr("+-/*%~[](){}><=.:|,;", c) == nullptr || c == '\0') {
      size_t q = pos_;
      const char32_t cp = utf8_next(src_, q);
      std::string shown;
      utf8_append(shown, cp);
      fail(pos_, fmt::format("unexpected char '{}'", shown));
    }
    track_balance(c);
    emit(TokenKind::kOperator, std::string(1, c), pos_);
    ++pos_;
  }

  void track_balance(char c) {
    if (c == '{' || c == '(' || c == '[') {
      balance_.push_back(c == '{' ? '}' : c == '(' ? ')' : ']');
      if (balance_.size() > static_cast<size_t>(kMaxExprHeight))
        fail(pos_, "brackets nest too deep");
    } else if (c == '}' || c == ')' || c == ']') {
      if (balance_.empty()) fail(pos_, fmt::format("unexpected '{}'", c));
      if (balance_.back() != c) {
        fail(pos_, fmt::format("unexpected '{}', expected '{}'", c, balance_.back()));
      }
      balance_.pop_back();
    }
  }

  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  bool line_starting_ = true;
  std::vector<char> balance_;
};

}  // namespace

std::string normalize_newlines(std::string_view source) {
  std::string out;
  out.reserve(source.size());
  for (size_t i = 0; i < source.size(); ++i) {
    if (source[i] == '\r') {
      out.push_back('\n');
      if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
    } else {
      out.push_back(source[i]);
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

std::vector<Token> tokenize(std::string_view source) {
  if (source.size() > kMaxTemplateBytes) {
    throw Error(ErrorCode::kInvalidArgument,
                fmt::format("chat template is {} bytes, more than the {} byte limit", source.size(),
                            kMaxTemplateBytes));
  }
  if (!is_valid_utf8(source)) {
    throw Error(ErrorCode::kInvalidArgument, "chat template is not valid UTF-8");
  }
  return Lexer(normalize_newlines(source)).run();
}

}  // namespace macserve::chat
