#include "score_bpe_model.h"

#include <queue>
#include <unordered_map>

#include <fmt/format.h>

#include "macserve/core/error.h"
#include "unicode.h"

namespace macserve::tokenizer {

ScoreBpeModel::ScoreBpeModel(const std::vector<std::string>& tokens,
                             const std::vector<float>& scores, const std::vector<PieceType>& types,
                             int32_t unk_id)
    : scores_(scores), types_(types), unk_id_(unk_id) {
  if (scores_.size() != tokens.size() || types_.size() != tokens.size())
    throw_error(ErrorCode::kInvalidModel, "{} tokens but {} scores and {} token types",
                tokens.size(), scores_.size(), types_.size());
  vocab_.reserve(tokens.size());
  for (std::size_t i = 0; i < tokens.size(); ++i) vocab_.add(tokens[i], static_cast<int32_t>(i));
  byte_ids_.fill(-1);
  for (int b = 0; b < 256; ++b) {
    const int32_t id = vocab_.find(fmt::format("<0x{:02X}>", b));
    if (id >= 0 && types_[id] == PieceType::kByte) byte_ids_[b] = id;
  }
  if (unk_id_ >= static_cast<int32_t>(tokens.size()))
    throw_error(ErrorCode::kInvalidModel, "unknown token id {} is outside the vocabulary of {}",
                unk_id_, tokens.size());
}

int32_t ScoreBpeModel::find_mergeable(std::string_view s) const {
  const int32_t id = vocab_.find(s);
  if (id < 0) return -1;
  const PieceType t = types_[id];
  return t == PieceType::kNormal || t == PieceType::kUserDefined || t == PieceType::kUnused ? id
                                                                                            : -1;
}

// One final symbol: its piece, else its bytes as <0xNN> tokens, else unk (runs of unk fused, as
// SentencePiece does without byte fallback).
void ScoreBpeModel::emit(std::string_view piece, bool* prev_unk, std::vector<int32_t>* out) const {
  const bool was_unk = *prev_unk;
  *prev_unk = false;
  if (const int32_t id = find_mergeable(piece); id >= 0) {
    out->push_back(id);
    return;
  }
  bool all_bytes = true;
  for (char c : piece) all_bytes = all_bytes && byte_ids_[static_cast<unsigned char>(c)] >= 0;
  if (all_bytes) {
    for (char c : piece) out->push_back(byte_ids_[static_cast<unsigned char>(c)]);
    return;
  }
  if (unk_id_ < 0) return;
  if (!was_unk) out->push_back(unk_id_);
  *prev_unk = true;
}

// SentencePiece's BPE: the highest-scoring adjacent pair whose concatenation is a piece merges
// first, leftmost on ties; stale queue entries are recognised by their size.
void ScoreBpeModel::merge_by_score(std::string_view text, std::vector<Symbol>* symbols,
                                   RevMerge* rev_merge) const {
  struct Pair {
    float score;
    int32_t left;
    std::size_t size;  // bytes of the merged piece
    bool operator<(const Pair& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  auto& sym = *symbols;
  std::priority_queue<Pair> agenda;
  auto piece_of = [&](int32_t k) { return text.substr(sym[k].begin, sym[k].len); };
  auto maybe_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const std::string_view merged = text.substr(sym[left].begin, sym[left].len + sym[right].len);
    const int32_t id = find_mergeable(merged);
    if (id < 0) return;
    agenda.push({scores_[id], left, merged.size()});
    if (types_[id] == PieceType::kUnused) (*rev_merge)[merged] = {piece_of(left), piece_of(right)};
  };
  for (std::size_t k = 1; k < sym.size(); ++k)
    maybe_add(static_cast<int32_t>(k - 1), static_cast<int32_t>(k));
  while (!agenda.empty()) {
    const Pair top = agenda.top();
    agenda.pop();
    Symbol& left = sym[top.left];
    if (left.len == 0 || left.next < 0) continue;
    Symbol& right = sym[left.next];
    if (right.len == 0 || left.len + right.len != top.size) continue;
    left.len += right.len;
    right.len = 0;
    left.next = right.next;
    if (left.next >= 0) sym[left.next].prev = top.left;
    maybe_add(left.prev, top.left);
    maybe_add(top.left, left.next);
  }
}

void ScoreBpeModel::tokenize(std::string_view text, std::vector<int32_t>* out) const {
  std::vector<Symbol> sym;
  for (std::size_t i = 0; i < text.size();) {
    const std::size_t begin = i;
    next_code_point(text, &i);
    const auto index = static_cast<int32_t>(sym.size());
    sym.push_back({begin, i - begin, index - 1, i < text.size() ? index + 1 : -1});
  }
  RevMerge rev_merge;
  merge_by_score(text, &sym, &rev_merge);
  // Unused pieces that merges produced are split back into their parts (SentencePiece resegment).
  std::vector<std::string_view> stack;
  bool prev_unk = false;
  for (int32_t k = sym.empty() ? -1 : 0; k >= 0; k = sym[k].next) {
    stack.assign(1, text.substr(sym[k].begin, sym[k].len));
    while (!stack.empty()) {  // depth-first, left part first
      const std::string_view p = stack.back();
      stack.pop_back();
      const int32_t id = find_mergeable(p);
      const auto it =
          id >= 0 && types_[id] == PieceType::kUnused ? rev_merge.find(p) : rev_merge.end();
      if (it == rev_merge.end()) {
        emit(p, &prev_unk, out);
      } else {
        stack.push_back(it->second.second);
        stack.push_back(it->second.first);
      }
    }
  }
}

}  // namespace macserve::tokenizer
