// GPT-2 byte-level alphabet: every byte maps to one printable code point (printable Latin-1 bytes
// map to themselves, the rest to U+0100..U+0143), so BPE over those characters can spell any byte
// string. Used by the ByteLevel pre-tokenizer and decoder.
#pragma once

#include <string>
#include <string_view>

namespace macserve::tokenizer {

// The alphabet character of each byte, UTF-8 encoded.
const std::string& byte_level_char(unsigned char b);

// Maps every byte of `bytes` to its alphabet character.
std::string to_byte_level(std::string_view bytes);

// Appends the bytes that `token` spells in the alphabet; returns false (appending nothing) when
// some character is outside it (e.g. an added token such as "héllo"), as HF's decoder checks.
bool from_byte_level(std::string_view token, std::string* out);

}  // namespace macserve::tokenizer
