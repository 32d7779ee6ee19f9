// Reads tokenizer.json with the two large members, model.vocab and model.merges (100K+ entries
// each in Qwen / Llama 3 files), parsed straight into flat vectors: a DOM of them costs more than
// the rest of loading together. Everything else becomes an ordinary nlohmann::json.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace macserve::tokenizer {

// A false positive of bugprone-exception-escape: nlohmann::json's destructor allocates to flatten
// nested values (std::bad_alloc there terminates); nothing in this struct throws.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct TokenizerJson {
  nlohmann::json rest;  // the document without model.vocab / model.merges
  bool has_vocab = false;
  std::vector<std::pair<std::string, int64_t>> vocab;  // model.vocab object, in file order
  bool has_merges = false;
  std::vector<std::pair<std::string, std::string>> merges;  // "a b" strings or [a, b] pairs
};

// Throws Error(kInvalidModel) on malformed JSON or a vocab / merges entry of the wrong shape.
TokenizerJson read_tokenizer_json(const std::string& text);

}  // namespace macserve::tokenizer
