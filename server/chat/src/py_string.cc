#include "py_string.h"

#include <algorithm>

#include "template_error.h"
#include "unicode.h"

namespace macserve::chat {
namespace {

bool in_set(const std::vector<char32_t>& set, char32_t cp) {
  return std::find(set.begin(), set.end(), cp) != set.end();
}

// Whitespace split from the left: runs of whitespace separate, the remainder after maxsplit
// keeps its trailing whitespace.
std::vector<std::string> split_whitespace(std::string_view s, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t i = 0;
  while (true) {
    while (i < s.size()) {
      size_t j = i;
      if (!is_py_space(utf8_next(s, j))) break;
      i = j;
    }
    if (i >= s.size()) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      out.emplace_back(s.substr(i));
      break;
    }
    size_t j = i;
    while (j < s.size()) {
      size_t k = j;
      if (is_py_space(utf8_next(s, k))) break;
      j = k;
    }
    out.emplace_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

std::vector<std::string> rsplit_whitespace(std::string_view s, int64_t maxsplit) {
  std::vector<std::string> out;
  size_t end = s.size();
  while (true) {
    while (end > 0) {
      size_t start = 0;
      if (!is_py_space(utf8_prev(s, end, start))) break;
      end = start;
    }
    if (end == 0) break;
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) {
      out.emplace_back(s.substr(0, end));
      break;
    }
    size_t begin = end;
    while (begin > 0) {
      size_t start = 0;
      if (is_py_space(utf8_prev(s, begin, start))) break;
      begin = start;
    }
    out.emplace_back(s.substr(begin, end - begin));
    end = begin;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

template <typename Pred>
bool all_chars(std::string_view s, Pred pred) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();) {
    if (!pred(utf8_next(s, i))) return false;
  }
  return true;
}

}  // namespace

std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                     bool right) {
  std::vector<char32_t> set;
  if (chars) {
    for (size_t i = 0; i < chars->size();) set.push_back(utf8_next(*chars, i));
  }
  const auto strip_it = [&](char32_t cp) { return chars ? in_set(set, cp) : is_py_space(cp); };
  size_t begin = 0;
  size_t end = s.size();
  while (left && begin < end) {
    size_t next = begin;
    if (!strip_it(utf8_next(s, next))) break;
    begin = next;
  }
  while (right && end > begin) {
    size_t start = 0;
    if (!strip_it(utf8_prev(s, end, start))) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep,
                                  int64_t maxsplit, bool from_right) {
  if (!sep) return from_right ? rsplit_whitespace(s, maxsplit) : split_whitespace(s, maxsplit);
  if (sep->empty()) raise(ErrorKind::kValueError, "empty separator");
  std::vector<std::string> out;
  if (!from_right) {
    size_t start = 0;
    for (size_t p = s.find(*sep); p != std::string_view::npos; p = s.find(*sep, start)) {
      if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) break;
      out.emplace_back(s.substr(start, p - start));
      start = p + sep->size();
    }
    out.emplace_back(s.substr(start));
    return out;
  }
  size_t end = s.size();
  while (end >= sep->size()) {
    if (maxsplit >= 0 && static_cast<int64_t>(out.size()) == maxsplit) break;
    const size_t p = s.rfind(*sep, end - sep->size());
    if (p == std::string_view::npos) break;
    out.emplace_back(s.substr(p + sep->size(), end - p - sep->size()));
    end = p;
  }
  out.emplace_back(s.substr(0, end));
  std::reverse(out.begin(), out.end());
  return out;
}

std::vector<std::string> py_splitlines(std::string_view s, bool keepends) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < s.size();) {
    const size_t at = i;
    const char32_t cp = utf8_next(s, i);
    if (!is_line_boundary(cp)) continue;
    if (cp == '\r' && i < s.size() && s[i] == '\n') ++i;
    out.emplace_back(s.substr(start, (keepends ? i : at) - start));
    start = i;
  }
  if (start < s.size()) out.emplace_back(s.substr(start));
  return out;
}

std::string py_replace(std::string_view s, std::string_view old, std::string_view repl,
                       int64_t count, size_t max_bytes) {
  const auto limit = [&](size_t occurrences) {
    const size_t size = s.size() + occurrences * repl.size();
    if (size > max_bytes + occurrences * old.size()) {
      raise(ErrorKind::kLimit, "text grows past the {} byte limit", max_bytes);
    }
  };
  std::string out;
  if (old.empty()) {
    const size_t slots = utf8_length(s) + 1;
    const size_t n = count < 0 ? slots : std::min(slots, static_cast<size_t>(count));
    limit(n);
    size_t done = 0;
    for (size_t i = 0; i < s.size();) {
      if (done < n) {
        out += repl;
        ++done;
      }
      const size_t len = utf8_char_len(s, i);
      out.append(s.substr(i, len));
      i += len;
    }
    if (done < n) out += repl;
    return out;
  }
  size_t occurrences = 0;
  for (size_t p = s.find(old); p != std::string_view::npos; p = s.find(old, p + old.size())) {
    if (count >= 0 && static_cast<int64_t>(occurrences) == count) break;
    ++occurrences;
  }
  limit(occurrences);
  size_t start = 0;
  for (size_t k = 0; k < occurrences; ++k) {
    const size_t p = s.find(old, start);
    out.append(s.substr(start, p - start));
    out.append(repl);
    start = p + old.size();
  }
  out.append(s.substr(start));
  return out;
}

int64_t py_find(std::string_view s, std::string_view sub, bool from_right) {
  const size_t p = from_right ? s.rfind(sub) : s.find(sub);
  if (p == std::string_view::npos) return -1;
  return static_cast<int64_t>(utf8_length(s.substr(0, p)));
}

int64_t py_count(std::string_view s, std::string_view sub) {
  if (sub.empty()) return static_cast<int64_t>(utf8_length(s)) + 1;
  int64_t n = 0;
  for (size_t p = s.find(sub); p != std::string_view::npos; p = s.find(sub, p + sub.size())) ++n;
  return n;
}

std::string py_pad(std::string_view s, int64_t width, std::string_view fill, char align,
                   size_t max_bytes) {
  const auto len = static_cast<int64_t>(utf8_length(s));
  if (width <= len) return std::string(s);
  const int64_t pad = width - len;
  if (static_cast<uint64_t>(pad) > max_bytes / std::max<size_t>(fill.size(), 1)) {
    raise(ErrorKind::kLimit, "text grows past the {} byte limit", max_bytes);
  }
  // CPython's pad split for center(): the odd extra goes left when width is odd.
  int64_t left = 0;
  if (align == '^') left = pad / 2 + (pad & width & 1);
  if (align == '>') left = pad;
  std::string out;
  for (int64_t i = 0; i < left; ++i) out += fill;
  out += s;
  for (int64_t i = left; i < pad; ++i) out += fill;
  return out;
}

bool py_isspace(std::string_view s) { return all_chars(s, is_py_space); }
bool py_isdigit(std::string_view s) { return all_chars(s, is_digit); }
bool py_isalpha(std::string_view s) {
  return all_chars(s, [](char32_t c) { return is_word_char(c) && !is_digit(c) && c != '_'; });
}
bool py_isalnum(std::string_view s) {
  return all_chars(s, [](char32_t c) { return is_word_char(c) && c != '_'; });
}

bool py_islower(std::string_view s) {
  bool cased = false;
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = utf8_next(s, i);
    if (is_upper_cp(cp)) return false;
    cased = cased || is_lower_cp(cp);
  }
  return cased;
}

bool py_isupper(std::string_view s) {
  bool cased = false;
  for (size_t i = 0; i < s.size();) {
    const char32_t cp = utf8_next(s, i);
    if (is_lower_cp(cp)) return false;
    cased = cased || is_upper_cp(cp);
  }
  return cased;
}

}  // namespace macserve::chat
