// VocabData (GGUF tokenizer.ggml.*) -> HfPipeline: the pipeline of the HF tokenizer.json the GGUF
// was converted from, as far as `model` and `pre` name it.
//   "gpt2":  byte-level BPE from tokens + merges; `pre` picks the pre-tokenizer regex.
//   "llama": SentencePiece-style BPE by scores with <0xNN> byte fallback.
// Token types 3 (control) are special added tokens, 4 (user-defined) non-special added tokens,
// both matched in the text before pre-tokenization; for "llama" 2 (unknown) is one too, as the
// HF conversion lists <unk> among its added tokens.
#include "bpe_model.h"
#include "hf_tokenizer.h"
#include "macserve/core/error.h"
#include "macserve/core/logging.h"
#include "macserve/tokenizer/tokenizer.h"
#include "score_bpe_model.h"

namespace macserve::tokenizer {

namespace {

constexpr const char* kSpaceSymbol = "\xE2\x96\x81";  // U+2581 '▁'

// The Split regexes of the HF tokenizer.json files these `pre` names come from.
constexpr const char* kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

DecoderStep decoder_step(DecoderKind kind) {
  DecoderStep s;
  s.kind = kind;
  return s;
}

PreTokenizerStep split_step(const char* regex, SplitBehavior behavior) {
  PreTokenizerStep s;
  s.kind = PreTokenizerKind::kSplit;
  s.regex = std::make_shared<const Regex>(regex);
  s.behavior = behavior;
  return s;
}

PreTokenizerStep byte_level_step(bool use_regex) {
  PreTokenizerStep s;
  s.kind = PreTokenizerKind::kByteLevel;
  s.add_prefix_space = false;
  s.use_regex = use_regex;
  return s;
}

// Normalizer, pre-tokenizer and BPE options for a `pre` name.
void configure_pre(const std::string& pre, HfPipeline* p, BpeOptions* options) {
  if (pre == "qwen2") {
    NormalizerStep nfc;
    nfc.kind = NormalizerKind::kUnicode;
    nfc.form = NormalForm::kNfc;
    p->normalizers.push_back(nfc);
    p->pre_tokenizers = {split_step(kQwen2Regex, SplitBehavior::kIsolated), byte_level_step(false)};
  } else if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    p->pre_tokenizers = {split_step(kLlama3Regex, SplitBehavior::kIsolated),
                         byte_level_step(false)};
    options->ignore_merges = true;
  } else if (pre == "smollm") {  // Digits(individual_digits) + ByteLevel with the GPT-2 regex
    p->pre_tokenizers = {split_step(kRustNumericClass, SplitBehavior::kIsolated),
                         byte_level_step(true)};
  } else {
    if (pre != "gpt2" && pre != "default" && !pre.empty())
      spdlog::warn("tokenizer: unknown GGUF pre-tokenizer \"{}\", using the GPT-2 regex", pre);
    p->pre_tokenizers = {byte_level_step(true)};
  }
}

void add_typed_tokens(const VocabData& v, bool unknown_too, AddedVocabulary* added) {
  for (std::size_t i = 0; i < v.token_types.size(); ++i) {
    const int32_t type = v.token_types[i];
    if (type != 3 && type != 4 && !(unknown_too && type == 2)) continue;
    AddedToken t;
    t.content = v.tokens[i];
    t.id = static_cast<int32_t>(i);
    t.special = type != 4;
    added->add(std::move(t));
  }
}

std::vector<std::pair<std::string, std::string>> split_merges(
    const std::vector<std::string>& merges) {
  std::vector<std::pair<std::string, std::string>> out;
  out.reserve(merges.size());
  for (const auto& m : merges) {
    const std::size_t space = m.find(' ');
    if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos)
      throw_error(ErrorCode::kInvalidModel, "GGUF merge {} \"{}\" is not two tokens", out.size(),
                  m);
    out.emplace_back(m.substr(0, space), m.substr(space + 1));
  }
  return out;
}

void build_byte_level(const VocabData& v, HfPipeline* p) {
  BpeOptions options;
  configure_pre(v.pre, p, &options);
  Vocab vocab;
  vocab.reserve(v.tokens.size());
  for (std::size_t i = 0; i < v.tokens.size(); ++i) vocab.add(v.tokens[i], static_cast<int32_t>(i));
  p->model =
      std::make_unique<BpeModel>(std::move(vocab), split_merges(v.merges), std::move(options));
  add_typed_tokens(v, /*unknown_too=*/false, &p->added);
  p->has_decoder = true;
  p->decoders.push_back(decoder_step(DecoderKind::kByteLevel));
}

std::vector<PieceType> piece_types(const VocabData& v) {
  std::vector<PieceType> types(v.tokens.size(), PieceType::kNormal);
  for (std::size_t i = 0; i < v.tokens.size(); ++i) {
    const int32_t t = v.token_types.empty() ? 1 : v.token_types[i];
    if (t == 2) types[i] = PieceType::kUnknown;
    if (t == 3) types[i] = PieceType::kControl;
    if (t == 4) types[i] = PieceType::kUserDefined;
    if (t == 5) types[i] = PieceType::kUnused;
    if (t == 6) types[i] = PieceType::kByte;
    if (v.token_types.empty()) {  // old files: infer what the types would say
      if (parse_byte_token(v.tokens[i]) >= 0) types[i] = PieceType::kByte;
      if (static_cast<int64_t>(i) == v.unk_id) types[i] = PieceType::kUnknown;
      if (static_cast<int64_t>(i) == v.bos_id || static_cast<int64_t>(i) == v.eos_id)
        types[i] = PieceType::kControl;
    }
  }
  return types;
}

void build_sentencepiece_bpe(const VocabData& v, HfPipeline* p) {
  const std::vector<float> scores =
      v.scores.empty() ? std::vector<float>(v.tokens.size(), 0.0f) : v.scores;
  p->model = std::make_unique<ScoreBpeModel>(v.tokens, scores, piece_types(v),
                                             static_cast<int32_t>(v.unk_id));
  if (v.add_space_prefix) {
    NormalizerStep prepend;
    prepend.kind = NormalizerKind::kPrepend;
    prepend.text = kSpaceSymbol;
    p->normalizers.push_back(prepend);
  }
  NormalizerStep replace;
  replace.kind = NormalizerKind::kReplace;
  replace.pattern = std::make_shared<const Regex>(" ", true);
  replace.text = kSpaceSymbol;
  p->normalizers.push_back(replace);
  add_typed_tokens(v, /*unknown_too=*/true, &p->added);
  p->has_decoder = true;
  DecoderStep to_space = decoder_step(DecoderKind::kReplace);
  to_space.pattern = std::make_shared<const Regex>(kSpaceSymbol, true);
  to_space.content = std::string(1, ' ');
  p->decoders = {to_space, decoder_step(DecoderKind::kByteFallback),
                 decoder_step(DecoderKind::kFuse)};
  if (v.add_space_prefix) {  // the space that Prepend added to the first word
    DecoderStep strip = decoder_step(DecoderKind::kStrip);
    strip.content = std::string(1, ' ');
    strip.start = 1;
    p->decoders.push_back(strip);
  }
}

void check_vocab(const VocabData& v) {
  const auto n = static_cast<int64_t>(v.tokens.size());
  if (n == 0) throw_error(ErrorCode::kInvalidModel, "GGUF vocabulary: no tokens");
  if (!v.token_types.empty() && static_cast<int64_t>(v.token_types.size()) != n)
    throw_error(ErrorCode::kInvalidModel, "GGUF vocabulary: {} tokens but {} token types", n,
                v.token_types.size());
  if (!v.scores.empty() && static_cast<int64_t>(v.scores.size()) != n)
    throw_error(ErrorCode::kInvalidModel, "GGUF vocabulary: {} tokens but {} scores", n,
                v.scores.size());
  for (const int64_t id : {v.bos_id, v.eos_id, v.unk_id, v.pad_id})
    if (id < -1 || id >= n)
      throw_error(ErrorCode::kInvalidModel, "GGUF vocabulary: token id {} is outside 0..{}", id,
                  n - 1);
}

}  // namespace

std::unique_ptr<Tokenizer> tokenizer_from_vocab(const VocabData& v) {
  check_vocab(v);
  HfPipeline p;
  if (v.model == "gpt2")
    build_byte_level(v, &p);
  else if (v.model == "llama")
    build_sentencepiece_bpe(v, &p);
  else
    throw_error(ErrorCode::kUnsupported,
                "GGUF tokenizer model \"{}\" is not supported (gpt2, llama)", v.model);
  p.bos_id = static_cast<int32_t>(v.bos_id);
  p.eos_id = static_cast<int32_t>(v.eos_id);
  if (v.add_bos && p.bos_id >= 0) p.prefix_ids.push_back(p.bos_id);
  if (v.add_eos && p.eos_id >= 0) p.suffix_ids.push_back(p.eos_id);
  auto tok = std::make_unique<HfTokenizer>(std::move(p));
  tok->set_chat_template(v.chat_template);
  return tok;
}

}  // namespace macserve::tokenizer
