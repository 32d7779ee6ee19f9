#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include <pcre2.h>

#include "macserve/core/error.h"
#include "unicode.h"

namespace macserve::tokenizer {

namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof(buf));
  return reinterpret_cast<const char*>(buf);
}

// Per-thread match state: JIT code needs a stack larger than the 32 KiB default on long runs of
// one character class (a 100 KB word is one match).
struct MatchState {
  pcre2_match_data* data = pcre2_match_data_create(1, nullptr);
  pcre2_match_context* context = pcre2_match_context_create(nullptr);
  pcre2_jit_stack* jit_stack =
      pcre2_jit_stack_create(std::size_t{64} << 10, std::size_t{16} << 20, nullptr);

  MatchState() {
    if (context != nullptr && jit_stack != nullptr)
      pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~MatchState() {
    pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
    pcre2_match_data_free(data);
  }
};

MatchState& match_state() {
  thread_local MatchState state;
  return state;
}

// HF compiles these patterns with Oniguruma, whose Unicode tables are newer (16.0) than those of
// the PCRE2 in Debian 12 (14.0), and whose \s is exactly White_Space (PCRE2's also takes
// U+180E). Spelling the classes out makes both engines agree on every code point (checked over
// all of them with scripts: letters and digits added in Unicode 15/16 are listed explicitly; a
// newer PCRE2 that knows them already is unaffected).
constexpr std::string_view kWhiteSpace =
    R"(\t-\r\x20\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";
constexpr std::string_view kNewLetters =
    R"(\x{1C89}-\x{1C8A}\x{A7CB}-\x{A7CD}\x{A7DA}-\x{A7DC}\x{105C0}-\x{105F3}\x{10D4A}-\x{10D65})"
    R"(\x{10D6F}-\x{10D85}\x{10EC2}-\x{10EC4}\x{1123F}-\x{11240}\x{11380}-\x{11389}\x{1138B}\x{1138E})"
    R"(\x{11390}-\x{113B5}\x{113B7}\x{113D1}\x{113D3}\x{11BC0}-\x{11BE0}\x{11F02}\x{11F04}-\x{11F10})"
    R"(\x{11F12}-\x{11F33}\x{1342F}\x{13441}-\x{13446}\x{13460}-\x{143FA}\x{16100}-\x{1611D})"
    R"(\x{16D40}-\x{16D6C}\x{18CFF}\x{1B132}\x{1B155}\x{1DF25}-\x{1DF2A}\x{1E030}-\x{1E06D})"
    R"(\x{1E4D0}-\x{1E4EB}\x{1E5D0}-\x{1E5ED}\x{1E5F0}\x{2B739}\x{2EBF0}-\x{2EE5D}\x{31350}-\x{323AF})";
constexpr std::string_view kNewNumbers =
    R"(\x{10D40}-\x{10D49}\x{116D0}-\x{116E3}\x{11BF0}-\x{11BF9}\x{11F50}-\x{11F59}\x{16130}-\x{16139})"
    R"(\x{16D70}-\x{16D79}\x{1CCF0}-\x{1CCF9}\x{1D2C0}-\x{1D2D3}\x{1E4F0}-\x{1E4F9}\x{1E5F1}-\x{1E5FA})";

// Rewrites \s, \S, \p{L} and \p{N} into the explicit classes above, inside or outside [...].
std::string onig_compatible(std::string_view p) {
  std::string out;
  bool in_class = false;
  auto put_class = [&](std::string_view head, std::string_view ranges, bool negate) {
    if (!in_class) out += negate ? "[^" : "[";
    out.append(head).append(ranges);
    if (!in_class) out += ']';
  };
  for (std::size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const std::string_view rest = p.substr(i);
      if (rest.starts_with("\\s"))
        put_class("", kWhiteSpace, false), i += 1;
      else if (rest.starts_with("\\S") && !in_class)
        put_class("", kWhiteSpace, true), i += 1;
      else if (rest.starts_with("\\p{L}"))
        put_class("\\p{L}", kNewLetters, false), i += 4;
      else if (rest.starts_with("\\p{N}"))
        put_class("\\p{N}", kNewNumbers, false), i += 4;
      else
        out.append(p.substr(i, 2)), i += 1;
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];  // a leading ']' is literal
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

Regex::Regex(std::string_view pattern, bool literal) : pattern_(pattern) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // PCRE2_LITERAL refuses PCRE2_UCP (it has no classes to apply it to).
  const uint32_t options = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP;
  const std::string compiled = literal ? std::string(pattern) : onig_compatible(pattern);
  code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(), options,
                        &error, &offset, nullptr);
  if (code_ == nullptr)
    throw_error(ErrorCode::kInvalidModel, "bad regex '{}': {} at offset {}", pattern_,
                pcre2_message(error), offset);
  pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when unavailable
}

Regex::~Regex() { pcre2_code_free(code_); }

void Regex::find_all(std::string_view subject, std::vector<Span>* out) const {
  MatchState& st = match_state();
  MACSERVE_CHECK(st.data != nullptr, "pcre2 match data allocation failed");
  const auto* text = reinterpret_cast<PCRE2_SPTR>(subject.data());
  std::size_t pos = 0;
  while (pos <= subject.size()) {
    int rc = pcre2_match(code_, text, subject.size(), pos, PCRE2_NO_UTF_CHECK, st.data, st.context);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)  // retry in the interpreter, which uses the heap
      rc = pcre2_match(code_, text, subject.size(), pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, st.data,
                       st.context);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    if (rc < 0)
      throw_error(ErrorCode::kInvalidArgument,
                  "pre-tokenizer regex '{}' failed on a {}-byte text: {}", pattern_, subject.size(),
                  pcre2_message(rc));
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(st.data);
    const std::size_t begin = ov[0];
    const std::size_t end = ov[1];
    out->emplace_back(begin, end);
    if (end > begin) {
      pos = end;
    } else {
      if (begin >= subject.size()) return;
      pos = begin + utf8_seq_length(static_cast<unsigned char>(subject[begin]));
    }
  }
}

}  // namespace macserve::tokenizer
