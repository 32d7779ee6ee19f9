#include "byte_level.h"

#include <array>

#include "unicode.h"

namespace macserve::tokenizer {

namespace {

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_char;
  std::array<int, 0x144> char_to_byte{};  // code points used by the alphabet are all < 0x144

  ByteLevelTables() {
    char_to_byte.fill(-1);
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      const char32_t cp =
          printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      append_utf8(&byte_to_char[b], cp);
      char_to_byte[cp] = b;
    }
  }
};

const ByteLevelTables& tables() {
  static const ByteLevelTables kTables;
  return kTables;
}

}  // namespace

const std::string& byte_level_char(unsigned char b) { return tables().byte_to_char[b]; }

std::string to_byte_level(std::string_view bytes) {
  const auto& t = tables();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) out += t.byte_to_char[static_cast<unsigned char>(c)];
  return out;
}

bool from_byte_level(std::string_view token, std::string* out) {
  const auto& t = tables();
  const std::size_t start = out->size();
  std::size_t i = 0;
  while (i < token.size()) {
    std::size_t subpart = 0;
    if (utf8_valid_length(token, i, &subpart) == 0) break;
    const char32_t cp = next_code_point(token, &i);
    if (cp >= t.char_to_byte.size() || t.char_to_byte[cp] < 0) break;
    out->push_back(static_cast<char>(t.char_to_byte[cp]));
    if (i == token.size()) return true;
  }
  if (token.empty()) return true;
  out->resize(start);
  return false;
}

}  // namespace macserve::tokenizer
