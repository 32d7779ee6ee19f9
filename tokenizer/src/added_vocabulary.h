// Added tokens (HF tokenizer.json "added_tokens", GGUF control / user-defined tokens): found in the
// text before normalization and pre-tokenization, leftmost first and longest at a position (HF
// uses Aho-Corasick LeftmostLongest; a byte trie gives the same matches), honouring the
// lstrip / rstrip / single_word / normalized flags.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "model.h"

namespace macserve::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;      // skipped by decode(skip_special=true)
  bool lstrip = false;       // also swallows the whitespace before it
  bool rstrip = false;       // also swallows the whitespace after it
  bool single_word = false;  // only matches when not inside a word
  bool normalized = false;   // matched in the normalized text instead of the raw text
};

// A span of a text: an added token (id >= 0) or text between tokens (id == -1).
struct TextCut {
  std::size_t begin;
  std::size_t end;
  int32_t id;
};

class AddedVocabulary {
 public:
  void add(AddedToken token);
  // Builds the matchers; `normalize` gives the form of normalized=true tokens that is matched.
  void build(const std::function<std::string(const std::string&)>& normalize);

  // Cuts `text` (valid UTF-8) at the tokens of one kind: the raw pass matches normalized=false
  // tokens, the normalized pass normalized=true ones. Empty gaps are left out.
  std::vector<TextCut> split(std::string_view text, bool normalized_pass) const;

  const AddedToken* by_id(int32_t id) const;
  int32_t find(std::string_view content) const;  // -1 when absent
  const std::vector<AddedToken>& tokens() const { return tokens_; }
  int64_t max_id() const;  // -1 when empty

 private:
  class Trie {
   public:
    void insert(std::string_view s, int32_t value);
    // Length of the longest key at text[pos..] (0 when none); *value gets its value.
    std::size_t longest_at(std::string_view text, std::size_t pos, int32_t* value) const;
    bool may_start(unsigned char c) const { return first_[c]; }
    bool empty() const { return nodes_.size() <= 1; }

   private:
    struct Node {
      int32_t value = -1;
      std::vector<std::pair<unsigned char, int32_t>> children;
    };
    std::vector<Node> nodes_ = std::vector<Node>(1);
    std::array<bool, 256> first_{};
  };

  bool accepts(const AddedToken& t, std::string_view text, std::size_t start,
               std::size_t stop) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<std::string, std::size_t, StringHash, std::equal_to<>> by_content_;
  std::unordered_map<int32_t, std::size_t> by_id_;
  Trie raw_trie_;
  Trie normalized_trie_;
};

}  // namespace macserve::tokenizer
