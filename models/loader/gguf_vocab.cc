// GGUF tokenizer metadata (tokenizer.ggml.*, tokenizer.chat_template) -> VocabData.
#include "gguf_internal.h"
#include "macserve/core/error.h"
#include "mmap_file.h"

namespace macserve::models {
namespace {

std::string get_string(const GgufFile& g, const std::string& key, const std::string& source) {
  const GgufValue* v = g.find(key);
  if (v == nullptr) return {};
  if (v->type != GgufValueType::kString)
    throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}' must be a string", source, key);
  return v->str;
}

const GgufValue* find_array(const GgufFile& g, const std::string& key, GgufValueType elem,
                            std::size_t size, const std::string& source) {
  const GgufValue* v = g.find(key);
  if (v == nullptr) return nullptr;
  if (v->type != GgufValueType::kArray || (v->elem_type != elem && !v->items.empty()))
    throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}' is not an array of the expected type",
                source, key);
  if (size != 0 && v->items.size() != size)
    throw_error(ErrorCode::kInvalidModel,
                "{}: metadata '{}' has {} entries but the vocabulary has {} tokens", source, key,
                v->items.size(), size);
  return v;
}

void read_flag(const GgufFile& g, const std::string& key, bool* out, const std::string& source) {
  const GgufValue* v = g.find(key);
  if (v == nullptr) return;
  if (v->type != GgufValueType::kBool)
    throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}' must be a bool", source, key);
  *out = v->u != 0;
}

void read_id(const GgufFile& g, const std::string& key, int64_t num_tokens, int64_t* out,
             const std::string& source) {
  const GgufValue* v = g.find(key);
  if (v == nullptr) return;
  const auto id = v->as_int();
  if (!id || *id < 0 || *id >= num_tokens)
    throw_error(ErrorCode::kInvalidModel, "{}: metadata '{}' is not a token id below {}", source,
                key, num_tokens);
  *out = *id;
}

// llama.cpp's defaults when the file does not say: SentencePiece vocabularies prepend BOS and a
// space; byte-level BPE ones do neither, except the Llama 3 family.
void set_defaults(VocabData& v) {
  const bool is_spm = v.model == "llama";
  v.add_bos = is_spm || v.pre == "llama-bpe" || v.pre == "llama3";
  v.add_space_prefix = is_spm;
  v.add_eos = false;
}

}  // namespace

std::optional<VocabData> gguf_vocab(const GgufFile& g, const std::string& source) {
  const GgufValue* tokens =
      find_array(g, "tokenizer.ggml.tokens", GgufValueType::kString, 0, source);
  if (tokens == nullptr || tokens->items.empty()) return std::nullopt;
  VocabData v;
  v.model = get_string(g, "tokenizer.ggml.model", source);
  v.pre = get_string(g, "tokenizer.ggml.pre", source);
  const std::size_t n = tokens->items.size();
  v.tokens.reserve(n);
  for (const GgufValue& t : tokens->items) v.tokens.push_back(t.str);
  if (const GgufValue* s = find_array(g, "tokenizer.ggml.scores", GgufValueType::kF32, n, source)) {
    v.scores.reserve(n);
    for (const GgufValue& x : s->items) v.scores.push_back(static_cast<float>(x.f));
  }
  if (const GgufValue* t =
          find_array(g, "tokenizer.ggml.token_type", GgufValueType::kI32, n, source)) {
    v.token_types.reserve(n);
    for (const GgufValue& x : t->items) v.token_types.push_back(static_cast<int32_t>(x.i));
  }
  if (const GgufValue* m =
          find_array(g, "tokenizer.ggml.merges", GgufValueType::kString, 0, source)) {
    v.merges.reserve(m->items.size());
    for (const GgufValue& x : m->items) v.merges.push_back(x.str);
  }
  const auto num_tokens = static_cast<int64_t>(n);
  read_id(g, "tokenizer.ggml.bos_token_id", num_tokens, &v.bos_id, source);
  read_id(g, "tokenizer.ggml.eos_token_id", num_tokens, &v.eos_id, source);
  read_id(g, "tokenizer.ggml.unknown_token_id", num_tokens, &v.unk_id, source);
  read_id(g, "tokenizer.ggml.padding_token_id", num_tokens, &v.pad_id, source);
  set_defaults(v);
  read_flag(g, "tokenizer.ggml.add_bos_token", &v.add_bos, source);
  read_flag(g, "tokenizer.ggml.add_eos_token", &v.add_eos, source);
  read_flag(g, "tokenizer.ggml.add_space_prefix", &v.add_space_prefix, source);
  v.chat_template = get_string(g, "tokenizer.chat_template", source);
  return v;
}

std::optional<VocabData> read_gguf_vocab(const std::string& path) {
  const auto file = MappedFile::open(path);
  return gguf_vocab(parse_gguf(file->bytes(), path), path);
}

}  // namespace macserve::models
