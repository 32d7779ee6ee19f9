#include "hf_tokenizer.h"

#include <algorithm>

#include "byte_level.h"
#include "macserve/core/error.h"
#include "unicode.h"

namespace macserve::tokenizer {

HfTokenizer::HfTokenizer(HfPipeline pipeline) : p_(std::move(pipeline)) {
  p_.added.build([this](const std::string& s) { return normalize(p_.normalizers, s); });
  vocab_size_ = std::max(p_.model->vocab().size(), p_.added.max_id() + 1);
  for (const auto* ids : {&p_.prefix_ids, &p_.suffix_ids})
    for (const int32_t id : *ids)
      if (token_string(id) == nullptr)
        throw_error(ErrorCode::kInvalidModel, "post-processor token id {} is not in the vocabulary",
                    id);
  special_.assign(static_cast<std::size_t>(vocab_size_), false);
  for (const auto& t : p_.added.tokens()) {
    if (!t.special) continue;
    special_[t.id] = true;
    if (const int32_t model_id = p_.model->vocab().find(t.content); model_id >= 0)
      special_[model_id] = true;
  }
}

const std::string* HfTokenizer::token_string(int32_t id) const {
  if (const AddedToken* t = p_.added.by_id(id)) return &t->content;
  return p_.model->vocab().token(id);
}

// One segment between raw-matched added tokens: normalize, then cut at normalized added tokens,
// then pre-tokenize and run the model on each piece.
void HfTokenizer::encode_segment(const std::string& text, bool at_start,
                                 std::vector<int32_t>* ids) const {
  const std::string normalized = normalize(p_.normalizers, text);
  std::vector<Piece> pieces;
  for (const auto& cut : p_.added.split(normalized, /*normalized_pass=*/true)) {
    if (cut.id >= 0) {
      ids->push_back(cut.id);
      continue;
    }
    pieces.assign(
        1, Piece{normalized.substr(cut.begin, cut.end - cut.begin), at_start && cut.begin == 0});
    pre_tokenize(p_.pre_tokenizers, &pieces);
    for (const auto& piece : pieces) p_.model->tokenize(piece.text, ids);
  }
}

std::vector<int32_t> HfTokenizer::encode(std::string_view input, bool add_special) const {
  const std::string text = sanitize_utf8(input);
  std::vector<int32_t> ids;
  if (add_special) ids = p_.prefix_ids;
  for (const auto& cut : p_.added.split(text, /*normalized_pass=*/false)) {
    if (cut.id >= 0)
      ids.push_back(cut.id);
    else
      encode_segment(text.substr(cut.begin, cut.end - cut.begin), cut.begin == 0, &ids);
  }
  if (add_special) ids.insert(ids.end(), p_.suffix_ids.begin(), p_.suffix_ids.end());
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    const std::string* s = token_string(id);
    if (s == nullptr) continue;  // unknown ids are dropped, as HF does
    if (skip_special && is_special(id)) continue;
    tokens.push_back(*s);
  }
  if (!p_.has_decoder) {
    std::string joined;
    for (std::size_t i = 0; i < tokens.size(); ++i) joined += (i > 0 ? " " : "") + tokens[i];
    return joined;
  }
  return run_decoders(p_.decoders, std::move(tokens));
}

// The decoder applied to one token without the steps that depend on its neighbours or position
// (Strip, Metaspace's first-token rule) and keeping partial UTF-8 bytes as they are.
std::string HfTokenizer::token_bytes(int32_t id) const {
  const std::string* s = token_string(id);
  if (s == nullptr) return {};
  std::string t = *s;
  if (!p_.has_decoder) return t;
  for (const auto& step : p_.decoders) {
    switch (step.kind) {
      case DecoderKind::kByteLevel: {
        std::string bytes;
        if (from_byte_level(t, &bytes)) t = std::move(bytes);
        break;
      }
      case DecoderKind::kReplace:
        t = replace_all(*step.pattern, t, step.content);
        break;
      case DecoderKind::kByteFallback:
        if (const int b = parse_byte_token(t); b >= 0) t.assign(1, static_cast<char>(b));
        break;
      case DecoderKind::kFuse:
      case DecoderKind::kStrip:
        break;
      case DecoderKind::kMetaspace:
        t = run_decoders({step}, {std::string(), t});
        break;
    }
  }
  return t;
}

std::string HfTokenizer::id_to_piece(int32_t id) const {
  const std::string* s = token_string(id);
  return s == nullptr ? std::string() : *s;
}

int32_t HfTokenizer::piece_to_id(std::string_view piece) const {
  if (const int32_t id = p_.added.find(piece); id >= 0) return id;
  return p_.model->vocab().find(piece);
}

bool HfTokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<std::size_t>(id) < special_.size() && special_[id];
}

}  // namespace macserve::tokenizer
