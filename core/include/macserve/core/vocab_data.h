// VocabData: a tokenizer described by plain data, as GGUF files store it (tokenizer.ggml.*).
// The GGUF loader (models/loader) fills it; the tokenizer module builds a Tokenizer from it. It
// lives in core because neither of those modules may include the other.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace macserve {

struct VocabData {
  std::string model;  // tokenizer.ggml.model: "gpt2" (byte-level BPE) or "llama" (SentencePiece)
  std::string pre;  // tokenizer.ggml.pre: pre-tokenizer name ("smollm", "llama-bpe", "qwen2", ...)
  std::vector<std::string> tokens;
  std::vector<float> scores;  // may be empty
  std::vector<int32_t>
      token_types;  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
  std::vector<std::string> merges;  // "left right", byte-level BPE only
  int64_t bos_id = -1;
  int64_t eos_id = -1;
  int64_t unk_id = -1;
  int64_t pad_id = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;
  std::string chat_template;  // tokenizer.chat_template, empty when absent
};

}  // namespace macserve
