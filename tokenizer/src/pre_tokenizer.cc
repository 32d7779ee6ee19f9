#include "pre_tokenizer.h"

#include "byte_level.h"
#include "normalizer.h"

namespace macserve::tokenizer {

namespace {

struct Cut {
  Span span;
  bool flag;  // is a match (before `behavior`), then: is removed
};

// HF NormalizedString::split: matches and the gaps between them, then the behaviour decides
// which spans are merged or removed.
std::vector<Cut> cuts_for(const std::string& s, const std::vector<Span>& matches, bool invert) {
  std::vector<Cut> cuts;
  std::size_t prev = 0;
  for (const auto& m : matches) {
    if (m.first != prev) cuts.push_back({{prev, m.first}, invert});
    cuts.push_back({m, !invert});
    prev = m.second;
  }
  if (prev != s.size()) cuts.push_back({{prev, s.size()}, invert});
  return cuts;
}

std::vector<Cut> apply_behavior(const std::vector<Cut>& cuts, SplitBehavior behavior) {
  std::vector<Cut> out;
  bool previous_match = false;
  switch (behavior) {
    case SplitBehavior::kRemoved:
      return cuts;
    case SplitBehavior::kIsolated:
      for (const auto& c : cuts) out.push_back({c.span, false});
      return out;
    case SplitBehavior::kMergedWithPrevious:
      for (const auto& c : cuts) {
        if (c.flag && !previous_match && !out.empty())
          out.back().span.second = c.span.second;
        else
          out.push_back({c.span, false});
        previous_match = c.flag;
      }
      return out;
    case SplitBehavior::kMergedWithNext:
      for (auto it = cuts.rbegin(); it != cuts.rend(); ++it) {
        if (it->flag && !previous_match && !out.empty())
          out.back().span.first = it->span.first;
        else
          out.push_back({it->span, false});
        previous_match = it->flag;
      }
      return {out.rbegin(), out.rend()};
    case SplitBehavior::kContiguous:
      for (std::size_t i = 0; i < cuts.size(); ++i) {
        if (i > 0 && cuts[i].flag == previous_match)
          out.back().span.second = cuts[i].span.second;
        else
          out.push_back({cuts[i].span, false});
        previous_match = cuts[i].flag;
      }
      return out;
  }
  return out;
}

void split_piece(const Piece& piece, const Regex& regex, SplitBehavior behavior, bool invert,
                 std::vector<Piece>* out) {
  std::vector<Span> matches;
  regex.find_all(piece.text, &matches);
  for (const auto& c : apply_behavior(cuts_for(piece.text, matches, invert), behavior)) {
    if (c.flag || c.span.first == c.span.second) continue;
    out->push_back({piece.text.substr(c.span.first, c.span.second - c.span.first),
                    piece.at_start && c.span.first == 0});
  }
}

void byte_level_piece(const PreTokenizerStep& step, Piece piece, std::vector<Piece>* out) {
  if (step.add_prefix_space && (piece.text.empty() || piece.text[0] != ' '))
    piece.text = std::string(1, ' ') + piece.text;
  std::vector<Piece> parts;
  if (step.use_regex)
    split_piece(piece, *gpt2_regex(), SplitBehavior::kIsolated, false, &parts);
  else if (!piece.text.empty())
    parts.push_back(std::move(piece));
  for (auto& p : parts) out->push_back({to_byte_level(p.text), p.at_start});
}

void metaspace_piece(const PreTokenizerStep& step, Piece piece, std::vector<Piece>* out) {
  static const Regex kSpace(" ", true);
  piece.text = replace_all(kSpace, piece.text, step.replacement);
  const bool starts = piece.text.compare(0, step.replacement.size(), step.replacement) == 0;
  const bool prepend =
      !starts && (step.prepend_scheme == PrependScheme::kAlways ||
                  (step.prepend_scheme == PrependScheme::kFirst && piece.at_start));
  if (prepend) piece.text.insert(0, step.replacement);
  if (!step.split) {
    if (!piece.text.empty()) out->push_back(std::move(piece));
    return;
  }
  split_piece(piece, *step.regex, SplitBehavior::kMergedWithNext, false, out);
}

}  // namespace

const std::shared_ptr<const Regex>& gpt2_regex() {
  static const std::shared_ptr<const Regex> kGpt2 = std::make_shared<const Regex>(
      R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)");
  return kGpt2;
}

void pre_tokenize(const std::vector<PreTokenizerStep>& steps, std::vector<Piece>* pieces) {
  for (const auto& step : steps) {
    std::vector<Piece> next;
    next.reserve(pieces->size() * 2);
    for (auto& piece : *pieces) {
      switch (step.kind) {
        case PreTokenizerKind::kSplit:
          split_piece(piece, *step.regex, step.behavior, step.invert, &next);
          break;
        case PreTokenizerKind::kByteLevel:
          byte_level_piece(step, std::move(piece), &next);
          break;
        case PreTokenizerKind::kMetaspace:
          metaspace_piece(step, std::move(piece), &next);
          break;
      }
    }
    *pieces = std::move(next);
  }
}

}  // namespace macserve::tokenizer
