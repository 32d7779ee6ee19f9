// tokenizer.model files through libsentencepiece. This is the only file of the project that
// includes sentencepiece_processor.h: Debian's header defines absl::string_view, which clashes
// with the abseil that gRPC headers bring (docs/architecture.md).
//
// What SentencePiece has no notion of follows the HF tokenizer.json conversion of the same model:
// control and unknown pieces written in the text ("<s>", "</s>", "<unk>") are single ids and the
// text between them is encoded segment by segment (each gets the dummy-prefix space);
// decode(skip_special=false) writes control pieces out and keeps the space of a leading '▁' in
// the runs that follow them ("<s>▁Hello" -> "<s> Hello"). User-defined pieces are left to
// SentencePiece itself (its API cannot list them).
#include "sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include "added_vocabulary.h"
#include "decoder.h"
#include "macserve/core/error.h"
#include "unicode.h"

namespace macserve::tokenizer {

namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // U+2581 '▁'

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const TokenizerConfig& config);

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  std::string token_bytes(int32_t id) const override;
  std::string id_to_piece(int32_t id) const override;
  int32_t piece_to_id(std::string_view piece) const override;
  int64_t vocab_size() const override { return size_; }
  int32_t bos_id() const override { return bos_id_; }
  int32_t eos_id() const override { return eos_id_; }
  bool is_special(int32_t id) const override { return valid(id) && sp_.IsControl(id); }

 private:
  bool valid(int32_t id) const { return id >= 0 && id < size_; }
  std::string decode_run(const std::vector<int>& run) const;
  int32_t config_id(const std::optional<std::string>& token, int fallback) const;

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
  int32_t size_ = 0;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;
  bool add_bos_ = true;
  bool add_eos_ = false;
  AddedVocabulary in_text_;  // control and unknown pieces matched in the text
};

SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path,
                                               const TokenizerConfig& config)
    : path_(path) {
  const auto status = sp_.Load(path);
  if (!status.ok())
    throw_error(ErrorCode::kInvalidModel, "{}: not a SentencePiece model: {}", path,
                status.ToString());
  size_ = sp_.GetPieceSize();
  for (int32_t id = 0; id < size_; ++id) {
    if (!sp_.IsControl(id) && !sp_.IsUnknown(id)) continue;
    AddedToken t;
    t.content = sp_.IdToPiece(id);
    t.id = id;
    t.special = sp_.IsControl(id);
    in_text_.add(std::move(t));
  }
  in_text_.build([](const std::string& s) { return s; });
  bos_id_ = config_id(config.bos_token, sp_.bos_id());
  eos_id_ = config_id(config.eos_token, sp_.eos_id());
  add_bos_ = config.add_bos_token.value_or(true);  // Llama-2 style models add BOS
  add_eos_ = config.add_eos_token.value_or(false);
  set_chat_template(config.chat_template);
}

int32_t SentencePieceTokenizer::config_id(const std::optional<std::string>& token,
                                          int fallback) const {
  if (token) {
    const int32_t id = piece_to_id(*token);
    if (id >= 0) return id;
  }
  return valid(fallback) ? fallback : -1;
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view input,
                                                    bool add_special) const {
  const std::string text = sanitize_utf8(input);
  std::vector<int32_t> ids;
  if (add_special && add_bos_ && bos_id_ >= 0) ids.push_back(bos_id_);
  std::vector<int> segment_ids;
  for (const auto& cut : in_text_.split(text, /*normalized_pass=*/false)) {
    if (cut.id >= 0) {
      ids.push_back(cut.id);
      continue;
    }
    const auto status =
        sp_.Encode(std::string_view(text).substr(cut.begin, cut.end - cut.begin), &segment_ids);
    if (!status.ok())
      throw_error(ErrorCode::kInternal, "{}: SentencePiece encode failed: {}", path_,
                  status.ToString());
    ids.insert(ids.end(), segment_ids.begin(), segment_ids.end());
  }
  if (add_special && add_eos_ && eos_id_ >= 0) ids.push_back(eos_id_);
  return ids;
}

std::string SentencePieceTokenizer::decode_run(const std::vector<int>& run) const {
  std::string text;
  const auto status = sp_.Decode(run, &text);
  if (!status.ok())
    throw_error(ErrorCode::kInternal, "{}: SentencePiece decode failed: {}", path_,
                status.ToString());
  return text;
}

std::string SentencePieceTokenizer::decode(const std::vector<int32_t>& ids,
                                           bool skip_special) const {
  std::vector<int> run;
  std::string out;
  auto flush = [&] {
    if (run.empty()) return;
    // SentencePiece drops the space of a leading '▁' because it starts the text; after a
    // written-out control piece it does not.
    if (!out.empty() && sp_.IdToPiece(run[0]).compare(0, kSpaceSymbol.size(), kSpaceSymbol) == 0)
      out += ' ';
    out += decode_run(run);
    run.clear();
  };
  for (const int32_t id : ids) {
    if (!valid(id)) continue;  // unknown ids are dropped, as HF does
    if (!skip_special && sp_.IsControl(id)) {
      flush();
      out += sp_.IdToPiece(id);
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

std::string SentencePieceTokenizer::token_bytes(int32_t id) const {
  if (!valid(id) || sp_.IsControl(id)) return {};
  const std::string& piece = sp_.IdToPiece(id);
  if (sp_.IsByte(id)) {
    const int b = parse_byte_token(piece);
    return b >= 0 ? std::string(1, static_cast<char>(b)) : std::string();
  }
  if (sp_.IsUnknown(id)) return decode_run({id});
  std::string out;
  for (std::size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kSpaceSymbol.size(), kSpaceSymbol) == 0) {
      out += ' ';
      i += kSpaceSymbol.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

std::string SentencePieceTokenizer::id_to_piece(int32_t id) const {
  return valid(id) ? sp_.IdToPiece(id) : std::string();
}

int32_t SentencePieceTokenizer::piece_to_id(std::string_view piece) const {
  const int id = sp_.PieceToId(piece);  // gives unk_id for pieces it does not know
  return valid(id) && sp_.IdToPiece(id) == piece ? id : -1;
}

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_model(const std::string& path,
                                                    const TokenizerConfig& config) {
  return std::make_unique<SentencePieceTokenizer>(path, config);
}

}  // namespace macserve::tokenizer
