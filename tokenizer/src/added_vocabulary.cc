#include "added_vocabulary.h"

#include <algorithm>

#include "unicode.h"

namespace macserve::tokenizer {

void AddedVocabulary::Trie::insert(std::string_view s, int32_t value) {
  if (s.empty()) return;  // an empty token can never be matched
  first_[static_cast<unsigned char>(s[0])] = true;
  int32_t node = 0;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    int32_t next = -1;
    for (const auto& [k, child] : nodes_[node].children)
      if (k == c) next = child;
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_[node].children.emplace_back(c, next);
      nodes_.emplace_back();
    }
    node = next;
  }
  if (nodes_[node].value < 0) nodes_[node].value = value;  // the first of equal contents wins
}

std::size_t AddedVocabulary::Trie::longest_at(std::string_view text, std::size_t pos,
                                              int32_t* value) const {
  std::size_t best = 0;
  int32_t node = 0;
  for (std::size_t i = pos; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    int32_t next = -1;
    for (const auto& [k, child] : nodes_[node].children)
      if (k == c) next = child;
    if (next < 0) break;
    node = next;
    if (nodes_[node].value >= 0) {
      best = i + 1 - pos;
      *value = nodes_[node].value;
    }
  }
  return best;
}

void AddedVocabulary::add(AddedToken token) {
  const std::size_t index = tokens_.size();
  by_content_.emplace(token.content, index);
  by_id_[token.id] = index;
  tokens_.push_back(std::move(token));
}

void AddedVocabulary::build(const std::function<std::string(const std::string&)>& normalize) {
  raw_trie_ = Trie();
  normalized_trie_ = Trie();
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const auto& t = tokens_[i];
    if (t.normalized)
      normalized_trie_.insert(normalize(t.content), static_cast<int32_t>(i));
    else
      raw_trie_.insert(t.content, static_cast<int32_t>(i));
  }
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

int32_t AddedVocabulary::find(std::string_view content) const {
  const auto it = by_content_.find(content);
  return it == by_content_.end() ? -1 : tokens_[it->second].id;
}

int64_t AddedVocabulary::max_id() const {
  int64_t m = -1;
  for (const auto& t : tokens_) m = std::max<int64_t>(m, t.id);
  return m;
}

namespace {

std::size_t previous_char_start(std::string_view s, std::size_t end) {
  std::size_t i = end - 1;
  while (i > 0 && (static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

char32_t char_before(std::string_view s, std::size_t end) {
  std::size_t i = previous_char_start(s, end);
  return next_code_point(s, &i);
}

}  // namespace

bool AddedVocabulary::accepts(const AddedToken& t, std::string_view text, std::size_t start,
                              std::size_t stop) const {
  if (!t.single_word) return true;
  const bool space_before = start == 0 || !is_word_char(char_before(text, start));
  std::size_t i = stop;
  const bool space_after = stop == text.size() || !is_word_char(next_code_point(text, &i));
  return space_before && space_after;
}

std::vector<TextCut> AddedVocabulary::split(std::string_view text, bool normalized_pass) const {
  const Trie& trie = normalized_pass ? normalized_trie_ : raw_trie_;
  std::vector<TextCut> cuts;
  std::size_t emitted = 0;  // end of the last token cut
  std::size_t pos = 0;
  while (!trie.empty() && pos < text.size()) {
    int32_t index = -1;
    const std::size_t len = trie.may_start(static_cast<unsigned char>(text[pos]))
                                ? trie.longest_at(text, pos, &index)
                                : 0;
    if (len == 0) {
      ++pos;
      continue;
    }
    std::size_t start = pos;
    std::size_t stop = pos + len;
    pos = stop;
    const AddedToken& t = tokens_[static_cast<std::size_t>(index)];
    if (!accepts(t, text, start, stop)) continue;
    if (t.lstrip) {
      while (start > emitted) {
        const std::size_t prev = previous_char_start(text, start);
        std::size_t i = prev;
        if (!is_unicode_whitespace(next_code_point(text, &i))) break;
        start = prev;
      }
    }
    if (t.rstrip) {
      while (stop < text.size()) {
        std::size_t i = stop;
        if (!is_unicode_whitespace(next_code_point(text, &i))) break;
        stop = i;
      }
      pos = stop;
    }
    if (start > emitted) cuts.push_back({emitted, start, -1});
    cuts.push_back({start, stop, t.id});
    emitted = stop;
  }
  if (emitted < text.size()) cuts.push_back({emitted, text.size(), -1});
  return cuts;
}

}  // namespace macserve::tokenizer
