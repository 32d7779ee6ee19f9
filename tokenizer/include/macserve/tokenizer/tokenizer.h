// Tokenizer: text <-> token ids, equal to Hugging Face `tokenizers` (and to libsentencepiece for
// .model files) for every input. Input that is not valid UTF-8 never crashes: every backend first
// replaces each maximal ill-formed subpart by U+FFFD (Python's bytes.decode('utf-8', 'replace')),
// so encode(bytes) equals HF's encoding of that string (tests pin it). All methods are const and
// safe to call from several threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "macserve/core/vocab_data.h"

namespace macserve::tokenizer {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // add_special: prepend BOS (and append EOS) as the tokenizer's post-processor / options say,
  // exactly as HF `encode(text, add_special_tokens=add_special)`. Special/added tokens that appear
  // in `text` are recognised as single ids.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special) const = 0;
  // skip_special: drop control tokens (BOS/EOS/...) as HF `decode(skip_special_tokens=True)`.
  virtual std::string decode(const std::vector<int32_t>& ids, bool skip_special) const = 0;
  // The raw bytes one token stands for (byte-fallback tokens give their byte; byte-level BPE tokens
  // their bytes; SentencePiece '▁' becomes ' '). Used by the incremental detokenizer.
  virtual std::string token_bytes(int32_t id) const = 0;
  virtual std::string id_to_piece(int32_t id) const = 0;          // the vocabulary string
  virtual int32_t piece_to_id(std::string_view piece) const = 0;  // -1 when absent
  virtual int64_t vocab_size() const = 0;
  virtual int32_t bos_id() const = 0;  // -1 when none
  virtual int32_t eos_id() const = 0;  // -1 when none
  virtual bool is_special(int32_t id) const = 0;
  virtual std::string chat_template() const { return chat_template_; }
  void set_chat_template(std::string t) { chat_template_ = std::move(t); }

 protected:
  std::string chat_template_;
};

// Loads from a model directory: tokenizer.json when present (HF), else tokenizer.model
// (SentencePiece); reads tokenizer_config.json for chat_template, bos/eos and add_bos_token.
// `path` may also name a tokenizer.json / tokenizer.model file (its directory's
// tokenizer_config.json is read). Throws Error(kInvalidModel, or kUnsupported for a component
// type outside the supported set, kNotFound for a missing path) naming the file.
std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path);
// From GGUF metadata ("gpt2" byte-level BPE or "llama" SentencePiece-style vocab).
std::unique_ptr<Tokenizer> tokenizer_from_vocab(const VocabData& vocab);

// Turns a growing list of ids into text deltas that never end in a broken UTF-8 character, and
// that equal what decode() of the whole list gives when concatenated.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tok, bool skip_special = true);
  // Appends one id; returns the newly completed text (possibly empty).
  std::string push(int32_t id);
  // Whatever is pending at the end (incomplete UTF-8 becomes U+FFFD, as decode() would give).
  std::string flush();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  std::size_t prefix_offset_ = 0;
  std::size_t read_offset_ = 0;
  std::string emitted_;
};

}  // namespace macserve::tokenizer
