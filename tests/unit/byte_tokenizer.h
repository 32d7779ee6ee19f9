// A byte-per-token Tokenizer (ids 0-255 = bytes) for host-only tests of the engine machinery,
// where no real vocabulary is involved.
#pragma once

#include <string>
#include <vector>

#include "macserve/tokenizer/tokenizer.h"

namespace macserve::testing_support {

class ByteTokenizer final : public tokenizer::Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text, bool) const override {
    return {text.begin(), text.end()};
  }
  std::string decode(const std::vector<int32_t>& ids, bool) const override {
    std::string s;
    for (int32_t id : ids) s += token_bytes(id);
    return s;
  }
  std::string token_bytes(int32_t id) const override {
    return std::string(1, static_cast<char>(id & 0xff));
  }
  std::string id_to_piece(int32_t id) const override { return token_bytes(id); }
  int32_t piece_to_id(std::string_view piece) const override {
    return piece.size() == 1 ? static_cast<unsigned char>(piece[0]) : -1;
  }
  int64_t vocab_size() const override { return 256; }
  int32_t bos_id() const override { return -1; }
  int32_t eos_id() const override { return -1; }
  bool is_special(int32_t) const override { return false; }
};

}  // namespace macserve::testing_support
