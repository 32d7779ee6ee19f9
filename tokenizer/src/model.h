// The vocabulary and the tokenization model that turns one pre-tokenized piece into ids
// (HF-style BPE with merge ranks, or SentencePiece-style BPE with piece scores).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace macserve::tokenizer {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

// id <-> string. Ids need not be dense: holes (ids no string names) have empty strings and are
// not looked up.
class Vocab {
 public:
  // Throws Error(kInvalidModel) on a negative id or one id given twice.
  void add(std::string token, int32_t id);
  int32_t find(std::string_view token) const {
    const auto it = ids_.find(token);
    return it == ids_.end() ? -1 : it->second;
  }
  const std::string* token(int32_t id) const {
    return id >= 0 && static_cast<std::size_t>(id) < has_.size() && has_[id] ? &tokens_[id]
                                                                             : nullptr;
  }
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }  // max id + 1
  void reserve(std::size_t n);

 private:
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> ids_;
  std::vector<std::string> tokens_;
  std::vector<bool> has_;
};

class Model {
 public:
  virtual ~Model() = default;
  // Appends the ids of one piece (non-empty, valid UTF-8).
  virtual void tokenize(std::string_view piece, std::vector<int32_t>* out) const = 0;
  virtual const Vocab& vocab() const = 0;
};

}  // namespace macserve::tokenizer
