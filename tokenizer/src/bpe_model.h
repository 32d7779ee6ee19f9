// HF BPE model: a piece starts as its characters (byte-fallback <0xNN> tokens or unk for those not
// in the vocabulary) and the adjacent pair with the lowest merge rank is merged until none is left;
// a priority queue over a linked list keeps that O(n log n) in the piece length. Results for short
// pieces are cached, as HF does.
#pragma once

#include <array>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model.h"

namespace macserve::tokenizer {

struct BpeOptions {
  std::string unk_token;  // empty: none
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;  // a whole piece found in the vocabulary is one token (Llama 3)
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
};

class BpeModel final : public Model {
 public:
  // `merges` in rank order. Throws Error(kInvalidModel) naming a merge whose parts or result are
  // not in the vocabulary, or an unk_token that is not.
  BpeModel(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges,
           BpeOptions options);

  void tokenize(std::string_view piece, std::vector<int32_t>* out) const override;
  const Vocab& vocab() const override { return vocab_; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    uint32_t len;  // bytes of the piece it covers; 0 once merged into its left neighbour
  };

  void initial_symbols(std::string_view word, std::vector<Symbol>* symbols) const;
  void merge_all(std::vector<Symbol>* symbols) const;
  const Merge* find_merge(int32_t left, int32_t right) const;

  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }

  Vocab vocab_;
  std::unordered_map<uint64_t, Merge> merges_;
  BpeOptions options_;
  int32_t unk_id_ = -1;
  std::array<int32_t, 256> byte_ids_{};  // id of "<0xNN>", -1 when absent

  static constexpr std::size_t kMaxCachedPiece = 256;  // bytes
  static constexpr std::size_t kCacheCapacity = 16384;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache_;
};

}  // namespace macserve::tokenizer
