#include "unicode.h"

namespace macserve::chat {
namespace {

constexpr char32_t kReplacement = 0xFFFD;

bool is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

// Pairs laid out as even = upper, odd = lower (or the reverse when odd_upper is set).
bool in_pair_block(char32_t cp, char32_t first, char32_t last) { return cp >= first && cp <= last; }

char32_t pair_lower(char32_t cp, bool odd_upper) {
  const bool is_odd = (cp & 1) != 0;
  if (is_odd == odd_upper) return cp + 1;
  return cp;
}

char32_t pair_upper(char32_t cp, bool odd_upper) {
  const bool is_odd = (cp & 1) != 0;
  if (is_odd != odd_upper) return cp - 1;
  return cp;
}

struct PairBlock {
  char32_t first;
  char32_t last;
  bool odd_upper;
};

// Latin Extended-A/Additional and Cyrillic blocks whose case pairs sit next to each other.
constexpr PairBlock kPairBlocks[] = {
    {0x0100, 0x012F, false}, {0x0132, 0x0137, false}, {0x0139, 0x0148, true},
    {0x014A, 0x0177, false}, {0x0179, 0x017E, true},  {0x0460, 0x0481, false},
    {0x048A, 0x04BF, false}, {0x04C1, 0x04CE, true},  {0x04D0, 0x052F, false},
    {0x1E00, 0x1E95, false}, {0x1EA0, 0x1EFF, false},
};

}  // namespace

size_t utf8_char_len(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  size_t n = 0;
  if (c < 0x80) return 1;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4;
  else
    return 1;
  if (i + n > s.size()) return 1;
  for (size_t k = 1; k < n; ++k) {
    if (!is_cont(static_cast<unsigned char>(s[i + k]))) return 1;
  }
  const auto c1 = static_cast<unsigned char>(s[i + 1]);
  // Overlong forms, surrogates and code points past U+10FFFF are ill-formed.
  if (c == 0xE0 && c1 < 0xA0) return 1;
  if (c == 0xED && c1 >= 0xA0) return 1;
  if (c == 0xF0 && c1 < 0x90) return 1;
  if (c == 0xF4 && c1 >= 0x90) return 1;
  return n;
}

char32_t utf8_next(std::string_view s, size_t& i) {
  const size_t n = utf8_char_len(s, i);
  const auto c = static_cast<unsigned char>(s[i]);
  if (n == 1) {
    ++i;
    return c < 0x80 ? c : kReplacement;
  }
  char32_t cp = c & (0xFF >> (n + 1));
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

char32_t utf8_prev(std::string_view s, size_t end, size_t& start) {
  // Step back over at most three continuation bytes, then check the lead byte spans to `end`.
  size_t j = end - 1;
  for (int k = 0; k < 3 && j > 0 && is_cont(static_cast<unsigned char>(s[j])); ++k) --j;
  size_t probe = j;
  if (utf8_char_len(s, j) == end - j) {
    start = j;
    return utf8_next(s, probe);
  }
  start = end - 1;
  probe = start;
  return utf8_next(s, probe);
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += utf8_char_len(s, i)) ++n;
  return n;
}

bool is_valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const size_t n = utf8_char_len(s, i);
    if (n == 1 && static_cast<unsigned char>(s[i]) >= 0x80) return false;
    i += n;
  }
  return true;
}

bool is_py_space(char32_t cp) {
  if (cp <= 0x20) return cp == 0x20 || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
  if (cp < 0x85) return false;
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

bool is_line_boundary(char32_t cp) {
  return cp == '\n' || cp == '\r' || cp == 0x0B || cp == 0x0C || cp == 0x1C || cp == 0x1D ||
         cp == 0x1E || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

bool is_printable(char32_t cp) {
  if (cp < 0x20 || (cp >= 0x7F && cp <= 0xA0)) return false;
  if (cp == 0xAD || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200F)) return false;
  if ((cp >= 0x2028 && cp <= 0x202F) || (cp >= 0x205F && cp <= 0x206F)) return false;
  if (cp == 0x3000 || cp == 0xFEFF || (cp >= 0xFFF9 && cp <= 0xFFFB)) return false;
  if (cp == 0xFFFE || cp == 0xFFFF || (cp >= 0xD800 && cp <= 0xF8FF)) return false;
  if ((cp >= 0x600 && cp <= 0x605) || cp == 0x61C || cp == 0x6DD || cp == 0x70F) return false;
  if (cp == 0x180E || (cp >= 0xE0000 && cp <= 0xE0FFF) || cp >= 0xF0000) return false;
  return true;
}

bool is_digit(char32_t cp) { return cp >= '0' && cp <= '9'; }

bool is_word_char(char32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           cp == '_';
  }
  // Approximation of Unicode letters/digits: everything that is not space, punctuation or a
  // symbol in the common blocks.
  if (is_py_space(cp) || !is_printable(cp)) return false;
  if (cp <= 0xBF)
    return cp == 0xAA || cp == 0xB2 || cp == 0xB3 || cp == 0xB5 || cp == 0xB9 || cp == 0xBA ||
           cp == 0xBC || cp == 0xBD || cp == 0xBE;
  if (cp == 0xD7 || cp == 0xF7) return false;
  if (cp >= 0x2000 && cp <= 0x2BFF) return false;  // punctuation, symbols, arrows, shapes
  if (cp >= 0x3000 && cp <= 0x303F) return cp == 0x3005 || cp == 0x3006 || cp == 0x3007;
  if (cp >= 0xFF00 && cp <= 0xFF0F) return false;
  if (cp >= 0x1F000 && cp <= 0x1FAFF) return false;  // emoji and pictographs
  return true;
}

char32_t to_lower_cp(char32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  if ((cp >= 0xC0 && cp <= 0xDE && cp != 0xD7)) return cp + 32;
  if (cp == 0x130) return 'i';
  if (cp == 0x178) return 0xFF;
  for (const PairBlock& b : kPairBlocks) {
    if (in_pair_block(cp, b.first, b.last)) return pair_lower(cp, b.odd_upper);
  }
  if (cp == 0x386) return 0x3AC;
  if (cp >= 0x388 && cp <= 0x38A) return cp + 37;
  if (cp == 0x38C) return 0x3CC;
  if (cp == 0x38E || cp == 0x38F) return cp + 63;
  if (cp >= 0x391 && cp <= 0x3AB && cp != 0x3A2) return cp + 32;
  if (cp >= 0x400 && cp <= 0x40F) return cp + 80;
  if (cp >= 0x410 && cp <= 0x42F) return cp + 32;
  if (cp >= 0x531 && cp <= 0x556) return cp + 48;
  if (cp >= 0xFF21 && cp <= 0xFF3A) return cp + 32;
  return cp;
}

char32_t to_upper_cp(char32_t cp) {
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') ? cp - 32 : cp;
  if (cp >= 0xE0 && cp <= 0xFE && cp != 0xF7) return cp - 32;
  if (cp == 0xB5) return 0x39C;
  if (cp == 0xFF) return 0x178;
  if (cp == 0x131) return 'I';
  if (cp == 0x17F) return 'S';
  for (const PairBlock& b : kPairBlocks) {
    if (in_pair_block(cp, b.first, b.last)) return pair_upper(cp, b.odd_upper);
  }
  if (cp == 0x3AC) return 0x386;
  if (cp >= 0x3AD && cp <= 0x3AF) return cp - 37;
  if (cp == 0x3CC) return 0x38C;
  if (cp == 0x3CD || cp == 0x3CE) return cp - 63;
  if (cp == 0x3C2) return 0x3A3;
  if (cp >= 0x3B1 && cp <= 0x3CB) return cp - 32;
  if (cp >= 0x430 && cp <= 0x44F) return cp - 32;
  if (cp >= 0x450 && cp <= 0x45F) return cp - 80;
  if (cp >= 0x561 && cp <= 0x586) return cp - 48;
  if (cp >= 0xFF41 && cp <= 0xFF5A) return cp - 32;
  return cp;
}

bool is_upper_cp(char32_t cp) { return to_lower_cp(cp) != cp; }
bool is_lower_cp(char32_t cp) { return to_upper_cp(cp) != cp || cp == 0xDF; }
bool is_cased_cp(char32_t cp) { return is_upper_cp(cp) || is_lower_cp(cp); }

std::string py_lower(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool prev_cased = false;
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = utf8_next(s, i);
    if (cp == 0x3A3) {
      // Final sigma: a capital sigma after a cased letter and before no cased letter.
      size_t j = i;
      const bool next_cased = j < s.size() && is_cased_cp(utf8_next(s, j));
      utf8_append(out, prev_cased && !next_cased ? 0x3C2 : 0x3C3);
    } else if (cp == 0x130) {
      out += "i\xCC\x87";  // 'İ' lowers to 'i' + combining dot above
    } else {
      utf8_append(out, to_lower_cp(cp));
    }
    prev_cased = is_cased_cp(cp);
  }
  return out;
}

std::string py_upper(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = utf8_next(s, i);
    if (cp == 0xDF) {
      out += "SS";
    } else {
      utf8_append(out, to_upper_cp(cp));
    }
  }
  return out;
}

std::string py_title(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  bool prev_cased = false;
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = utf8_next(s, i);
    if (prev_cased) {
      utf8_append(out, to_lower_cp(cp));
    } else if (cp == 0xDF) {
      out += "Ss";
    } else {
      utf8_append(out, to_upper_cp(cp));
    }
    prev_cased = is_cased_cp(cp);
  }
  return out;
}

std::string py_capitalize(std::string_view s) {
  if (s.empty()) return {};
  size_t i = 0;
  const char32_t first = utf8_next(s, i);
  std::string out;
  if (first == 0xDF) {
    out = "Ss";
  } else {
    utf8_append(out, to_upper_cp(first));
  }
  return out + py_lower(s.substr(i));
}

}  // namespace macserve::chat
