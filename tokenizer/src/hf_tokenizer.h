// A Hugging Face `tokenizers` pipeline: added tokens -> normalizer -> pre-tokenizer -> model ->
// post-processor on encode, decoder on decode. Built from tokenizer.json (hf_tokenizer_json.cc)
// or from GGUF VocabData (vocab_tokenizer.cc).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "added_vocabulary.h"
#include "decoder.h"
#include "macserve/tokenizer/tokenizer.h"
#include "model.h"
#include "normalizer.h"
#include "pre_tokenizer.h"

namespace macserve::tokenizer {

struct HfPipeline {
  std::vector<NormalizerStep> normalizers;
  std::vector<PreTokenizerStep> pre_tokenizers;
  std::unique_ptr<Model> model;
  bool has_decoder = false;  // without one, HF joins the token strings with spaces
  std::vector<DecoderStep> decoders;
  // The post-processor for a single sequence: ids put around it when add_special.
  std::vector<int32_t> prefix_ids;
  std::vector<int32_t> suffix_ids;
  AddedVocabulary added;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
};

class HfTokenizer final : public Tokenizer {
 public:
  explicit HfTokenizer(HfPipeline pipeline);

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special) const override;
  std::string token_bytes(int32_t id) const override;
  std::string id_to_piece(int32_t id) const override;
  int32_t piece_to_id(std::string_view piece) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  int32_t bos_id() const override { return p_.bos_id; }
  int32_t eos_id() const override { return p_.eos_id; }
  bool is_special(int32_t id) const override;

 private:
  const std::string* token_string(int32_t id) const;
  void encode_segment(const std::string& text, bool at_start, std::vector<int32_t>* ids) const;

  HfPipeline p_;
  int64_t vocab_size_ = 0;
  std::vector<bool> special_;  // by id: HF skips a token whose string is a special added token
};

}  // namespace macserve::tokenizer
