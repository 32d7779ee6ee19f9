// SentencePiece-style BPE by piece scores (GGUF "llama" vocabularies, as llama.cpp and
// libsentencepiece encode them): start from the characters, repeatedly merge the adjacent pair
// whose concatenation is a piece with the highest score (leftmost on ties), then spell characters
// the vocabulary lacks as <0xNN> byte tokens (or unk).
#pragma once

#include <array>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "model.h"

namespace macserve::tokenizer {

enum class PieceType { kNormal, kUnknown, kControl, kUserDefined, kUnused, kByte };

class ScoreBpeModel final : public Model {
 public:
  // tokens, scores and types are indexed by id (sizes must agree). Throws Error(kInvalidModel).
  ScoreBpeModel(const std::vector<std::string>& tokens, const std::vector<float>& scores,
                const std::vector<PieceType>& types, int32_t unk_id);

  void tokenize(std::string_view piece, std::vector<int32_t>* out) const override;
  const Vocab& vocab() const override { return vocab_; }

 private:
  struct Symbol {
    std::size_t begin;
    std::size_t len;  // 0 once merged into its left neighbour
    int32_t prev;
    int32_t next;
  };

  // Merges that produced an unused piece: piece -> its two parts.
  using RevMerge =
      std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>;

  void merge_by_score(std::string_view text, std::vector<Symbol>* symbols,
                      RevMerge* rev_merge) const;
  // Ids of pieces that merges may produce (normal, user-defined, unused), as SentencePiece.
  int32_t find_mergeable(std::string_view s) const;
  void emit(std::string_view piece, bool* prev_unk, std::vector<int32_t>* out) const;

  Vocab vocab_;
  std::vector<float> scores_;
  std::vector<PieceType> types_;
  int32_t unk_id_ = -1;
  std::array<int32_t, 256> byte_ids_{};
};

}  // namespace macserve::tokenizer
