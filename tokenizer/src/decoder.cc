#include "decoder.h"

#include "byte_level.h"
#include "normalizer.h"
#include "unicode.h"

namespace macserve::tokenizer {

int parse_byte_token(std::string_view token) {
  if (token.size() != 6 || token.substr(0, 3) != "<0x" || token[5] != '>') return -1;
  int value = 0;
  for (char c : token.substr(3, 2)) {
    int digit = -1;
    if (c >= '0' && c <= '9')
      digit = c - '0';
    else if (c >= 'a' && c <= 'f')
      digit = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      digit = c - 'A' + 10;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

namespace {

std::vector<std::string> decode_byte_level(const std::vector<std::string>& tokens) {
  std::string bytes;
  for (const auto& t : tokens)
    if (!from_byte_level(t, &bytes)) bytes += t;  // outside the alphabet: the token's own bytes
  return {sanitize_utf8(bytes)};
}

// A run of byte tokens becomes its text when the whole run is valid UTF-8, else one U+FFFD per
// byte (HF ByteFallback), so a later byte can turn earlier ones into U+FFFD.
std::vector<std::string> decode_byte_fallback(std::vector<std::string> tokens) {
  std::vector<std::string> out;
  std::string run;
  std::size_t run_length = 0;
  auto flush = [&] {
    if (run_length == 0) return;
    if (is_valid_utf8(run)) {
      out.push_back(run);
    } else {
      for (std::size_t i = 0; i < run_length; ++i) out.emplace_back(kReplacementUtf8);
    }
    run.clear();
    run_length = 0;
  };
  for (auto& t : tokens) {
    const int b = parse_byte_token(t);
    if (b >= 0) {
      run.push_back(static_cast<char>(b));
      ++run_length;
    } else {
      flush();
      out.push_back(std::move(t));
    }
  }
  flush();
  return out;
}

// Drops up to `start` leading and `stop` trailing occurrences of the character `c`.
std::string strip_chars(const std::string& token, const std::string& c, std::size_t start,
                        std::size_t stop) {
  std::size_t begin = 0;
  std::size_t end = token.size();
  for (std::size_t k = 0; k < start && !c.empty() && token.compare(begin, c.size(), c) == 0; ++k)
    begin += c.size();
  for (std::size_t k = 0; k < stop && !c.empty() && end >= begin + c.size() &&
                          token.compare(end - c.size(), c.size(), c) == 0;
       ++k)
    end -= c.size();
  return token.substr(begin, end - begin);
}

std::string metaspace_token(const std::string& token, const DecoderStep& step, bool first) {
  std::string out;
  std::size_t i = 0;
  const std::string& r = step.content;
  while (i < token.size()) {
    if (!r.empty() && token.compare(i, r.size(), r) == 0) {
      if (!first || step.prepend_scheme == PrependScheme::kNever) out.push_back(' ');
      i += r.size();
    } else {
      out.push_back(token[i++]);
    }
  }
  return out;
}

}  // namespace

std::string run_decoders(const std::vector<DecoderStep>& steps, std::vector<std::string> tokens) {
  for (const auto& step : steps) {
    switch (step.kind) {
      case DecoderKind::kByteLevel:
        tokens = decode_byte_level(tokens);
        break;
      case DecoderKind::kReplace:
        for (auto& t : tokens) t = replace_all(*step.pattern, t, step.content);
        break;
      case DecoderKind::kByteFallback:
        tokens = decode_byte_fallback(std::move(tokens));
        break;
      case DecoderKind::kFuse: {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.clear();
        tokens.push_back(std::move(all));
        break;
      }
      case DecoderKind::kStrip:
        for (auto& t : tokens) t = strip_chars(t, step.content, step.start, step.stop);
        break;
      case DecoderKind::kMetaspace:
        for (std::size_t i = 0; i < tokens.size(); ++i)
          tokens[i] = metaspace_token(tokens[i], step, i == 0);
        break;
    }
  }
  std::string text;
  for (const auto& t : tokens) text += t;
  return text;
}

}  // namespace macserve::tokenizer
