// Streaming detokenization by re-decoding a small window (the approach of HF text-generation-
// inference and vLLM): decode ids[prefix_offset_:read_offset_] (text already sent) and
// ids[prefix_offset_:] and send the difference once it is settled. Decoding a window that starts
// a few tokens back keeps the context a token's text depends on (SentencePiece's leading space,
// the start of a multi-byte character) identical in both decodes.
//
// Text is held back while it could still change: while the raw bytes of the last kept tokens stop
// inside a UTF-8 character (the next token may complete it), while the last kept token is a
// <0xNN> byte token (HF's ByteFallback decodes a run of bytes as a whole, so a later byte can turn
// earlier ones into U+FFFD), and when the window decode does not extend what was sent. A U+FFFD
// for bytes that can no longer form a character is final and goes out at once. flush()
// reconciles with a decode of all ids, so concatenated deltas always equal decode(ids).
#include <algorithm>

#include "decoder.h"
#include "macserve/tokenizer/tokenizer.h"
#include "unicode.h"

namespace macserve::tokenizer {

namespace {

// True when `tail` ends with a proper prefix of a well-formed UTF-8 sequence.
bool ends_inside_char(const std::string& tail) {
  for (std::size_t back = 1; back <= 3 && back <= tail.size(); ++back) {
    const auto b = static_cast<unsigned char>(tail[tail.size() - back]);
    if ((b & 0xC0) == 0x80) continue;  // a continuation byte: look further back for the lead
    if (b < 0xC2 || b > 0xF4 || utf8_seq_length(b) <= back) return false;
    std::size_t subpart = 0;
    return utf8_valid_length(tail, tail.size() - back, &subpart) == 0 && subpart == back;
  }
  return false;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  ids_.push_back(id);
  // The raw bytes of the last ids that decode keeps (it drops skipped specials and ids with no
  // piece), enough to see an unfinished character.
  std::string tail;
  bool last = true;
  for (auto it = ids_.rbegin(); it != ids_.rend() && tail.size() < 4; ++it) {
    if (skip_special_ && tok_.is_special(*it)) continue;
    const std::string piece = tok_.id_to_piece(*it);
    if (piece.empty()) continue;
    if (last && parse_byte_token(piece) >= 0) return {};
    last = false;
    tail.insert(0, tok_.token_bytes(*it));
  }
  if (ends_inside_char(tail)) return {};
  const auto begin = ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_);
  const std::string prefix_text = tok_.decode(
      std::vector<int32_t>(begin, ids_.begin() + static_cast<std::ptrdiff_t>(read_offset_)),
      skip_special_);
  const std::string new_text = tok_.decode(std::vector<int32_t>(begin, ids_.end()), skip_special_);
  if (new_text.size() <= prefix_text.size() ||
      new_text.compare(0, prefix_text.size(), prefix_text) != 0)
    return {};
  std::string delta = new_text.substr(prefix_text.size());
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  emitted_ += delta;
  return delta;
}

std::string IncrementalDetokenizer::flush() {
  const std::string full = tok_.decode(ids_, skip_special_);
  std::string rest;
  if (full.size() >= emitted_.size() && full.compare(0, emitted_.size(), emitted_) == 0) {
    rest = full.substr(emitted_.size());
  } else {  // cannot happen with the decoders above; still never send a broken suffix
    const auto begin = ids_.begin() + static_cast<std::ptrdiff_t>(prefix_offset_);
    const std::string prefix_text = tok_.decode(
        std::vector<int32_t>(begin, ids_.begin() + static_cast<std::ptrdiff_t>(read_offset_)),
        skip_special_);
    const std::string new_text =
        tok_.decode(std::vector<int32_t>(begin, ids_.end()), skip_special_);
    if (new_text.size() > prefix_text.size() &&
        new_text.compare(0, prefix_text.size(), prefix_text) == 0)
      rest = new_text.substr(prefix_text.size());
  }
  emitted_ += rest;
  prefix_offset_ = read_offset_;
  read_offset_ = ids_.size();
  return rest;
}

}  // namespace macserve::tokenizer
