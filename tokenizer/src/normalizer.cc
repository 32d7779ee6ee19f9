#include "normalizer.h"

namespace macserve::tokenizer {

std::string replace_all(const Regex& pattern, const std::string& s, std::string_view with) {
  std::vector<Span> matches;
  pattern.find_all(s, &matches);
  if (matches.empty()) return s;
  std::string out;
  out.reserve(s.size() + matches.size() * with.size());
  std::size_t prev = 0;
  for (const auto& [begin, end] : matches) {
    out.append(s, prev, begin - prev);
    out.append(with);
    prev = end;
  }
  out.append(s, prev, std::string::npos);
  return out;
}

namespace {

std::string strip_whitespace(const std::string& s, bool left, bool right) {
  std::size_t begin = 0;
  std::size_t end = s.size();
  if (left) {
    while (begin < end) {
      std::size_t i = begin;
      if (!is_unicode_whitespace(next_code_point(s, &i))) break;
      begin = i;
    }
  }
  if (right) {
    while (end > begin) {
      std::size_t start = end - 1;
      while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
      std::size_t i = start;
      if (!is_unicode_whitespace(next_code_point(s, &i))) break;
      end = start;
    }
  }
  return s.substr(begin, end - begin);
}

}  // namespace

std::string normalize(const std::vector<NormalizerStep>& steps, std::string s) {
  for (const auto& step : steps) {
    switch (step.kind) {
      case NormalizerKind::kUnicode:
        s = normalize_unicode(s, step.form);
        break;
      case NormalizerKind::kPrepend:
        if (!s.empty()) s.insert(0, step.text);
        break;
      case NormalizerKind::kReplace:
        s = replace_all(*step.pattern, s, step.text);
        break;
      case NormalizerKind::kStrip:
        s = strip_whitespace(s, step.strip_left, step.strip_right);
        break;
    }
  }
  return s;
}

}  // namespace macserve::tokenizer
