#include "bpe_model.h"

#include <queue>

#include <fmt/format.h>

#include "macserve/core/error.h"
#include "unicode.h"

namespace macserve::tokenizer {

BpeModel::BpeModel(Vocab vocab, const std::vector<std::pair<std::string, std::string>>& merges,
                   BpeOptions options)
    : vocab_(std::move(vocab)), options_(std::move(options)) {
  if (!options_.unk_token.empty()) {
    unk_id_ = vocab_.find(options_.unk_token);
    if (unk_id_ < 0)
      throw_error(ErrorCode::kInvalidModel, "unk_token '{}' is not in the vocabulary",
                  options_.unk_token);
  }
  for (int b = 0; b < 256; ++b) byte_ids_[b] = vocab_.find(fmt::format("<0x{:02X}>", b));
  const std::size_t prefix_len = options_.continuing_subword_prefix.size();
  merges_.reserve(merges.size());
  for (std::size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [a, b] = merges[rank];
    const int32_t a_id = vocab_.find(a);
    const int32_t b_id = vocab_.find(b);
    const std::string merged = a + (b.size() >= prefix_len ? b.substr(prefix_len) : std::string());
    const int32_t new_id = vocab_.find(merged);
    if (a_id < 0 || b_id < 0 || new_id < 0)
      throw_error(ErrorCode::kInvalidModel, "merge {} '{} {}': '{}' is not in the vocabulary", rank,
                  a, b,
                  a_id < 0   ? a
                  : b_id < 0 ? b
                             : merged);
    // A repeated pair keeps its last rank, as HF's HashMap collect does.
    merges_.insert_or_assign(pair_key(a_id, b_id), Merge{static_cast<int32_t>(rank), new_id});
  }
}

const BpeModel::Merge* BpeModel::find_merge(int32_t left, int32_t right) const {
  const auto it = merges_.find(pair_key(left, right));
  return it == merges_.end() ? nullptr : &it->second;
}

// HF BPE::merge_word before merging: one symbol per character, with the subword prefix / word
// suffix, byte fallback, and (fused) unk for characters the vocabulary lacks.
void BpeModel::initial_symbols(std::string_view word, std::vector<Symbol>* symbols) const {
  auto add = [symbols](int32_t id, std::size_t len) {
    const auto prev = static_cast<int32_t>(symbols->size()) - 1;
    if (prev >= 0) (*symbols)[prev].next = prev + 1;
    symbols->push_back({id, prev, -1, static_cast<uint32_t>(len)});
  };
  int32_t pending_unk_len = -1;  // bytes of a pending unk symbol, -1 when none
  std::string buf;
  std::size_t i = 0;
  while (i < word.size()) {
    const std::size_t begin = i;
    next_code_point(word, &i);
    const std::string_view ch = word.substr(begin, i - begin);
    std::string_view s = ch;
    const bool decorate = (begin > 0 && !options_.continuing_subword_prefix.empty()) ||
                          (i == word.size() && !options_.end_of_word_suffix.empty());
    if (decorate) {
      buf.assign(begin > 0 ? options_.continuing_subword_prefix : std::string());
      buf.append(ch);
      if (i == word.size()) buf.append(options_.end_of_word_suffix);
      s = buf;
    }
    if (const int32_t id = vocab_.find(s); id >= 0) {
      if (pending_unk_len >= 0) add(unk_id_, static_cast<std::size_t>(pending_unk_len));
      pending_unk_len = -1;
      add(id, ch.size());
      continue;
    }
    if (options_.byte_fallback) {
      bool all = true;
      for (char c : s) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {  // like HF, a pending unk stays pending across these bytes
        for (char c : s) add(byte_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (unk_id_ < 0) continue;  // no unk token: HF drops the character
    if (pending_unk_len >= 0 && options_.fuse_unk) {
      pending_unk_len += static_cast<int32_t>(ch.size());
    } else {
      if (pending_unk_len >= 0) add(unk_id_, static_cast<std::size_t>(pending_unk_len));
      pending_unk_len = static_cast<int32_t>(ch.size());
    }
  }
  if (pending_unk_len >= 0) add(unk_id_, static_cast<std::size_t>(pending_unk_len));
}

// HF Word::merge_all: lowest rank first, then leftmost; stale queue entries are skipped by
// checking that the pair at `pos` still merges into the same id.
void BpeModel::merge_all(std::vector<Symbol>* symbols) const {
  struct Entry {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    bool operator<(const Entry& o) const {  // "less" = lower priority
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  auto& sym = *symbols;
  std::priority_queue<Entry> queue;
  for (std::size_t i = 0; i + 1 < sym.size(); ++i)
    if (const Merge* m = find_merge(sym[i].id, sym[i + 1].id))
      queue.push({m->rank, static_cast<int32_t>(i), m->new_id});
  while (!queue.empty()) {
    const Entry top = queue.top();
    queue.pop();
    Symbol& cur = sym[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const Symbol right = sym[cur.next];
    const Merge* m = find_merge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;
    sym[cur.next].len = 0;
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (cur.prev >= 0)
      if (const Merge* p = find_merge(sym[cur.prev].id, cur.id))
        queue.push({p->rank, cur.prev, p->new_id});
    if (cur.next >= 0)
      if (const Merge* n = find_merge(cur.id, sym[cur.next].id))
        queue.push({n->rank, top.pos, n->new_id});
  }
}

void BpeModel::tokenize(std::string_view piece, std::vector<int32_t>* out) const {
  if (piece.empty()) return;
  if (options_.ignore_merges) {
    if (const int32_t id = vocab_.find(piece); id >= 0) {
      out->push_back(id);
      return;
    }
  }
  const bool cacheable = piece.size() <= kMaxCachedPiece;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (const auto it = cache_.find(piece); it != cache_.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<Symbol> symbols;
  symbols.reserve(piece.size());
  initial_symbols(piece, &symbols);
  merge_all(&symbols);
  std::vector<int32_t> ids;
  for (const auto& s : symbols)
    if (s.len != 0) ids.push_back(s.id);
  out->insert(out->end(), ids.begin(), ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();  // cheap bound; hot pieces come back
    cache_.emplace(std::string(piece), std::move(ids));
  }
}

}  // namespace macserve::tokenizer
