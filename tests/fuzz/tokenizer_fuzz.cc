// Fuzzes the tokenizers with arbitrary bytes: encode() of a byte-level BPE tokenizer.json (Qwen3),
// a SentencePiece-style one (stories260K tokenizer.json, byte fallback) and a SentencePiece
// .model (Llama 2), then decode() and the incremental detokenizer. The same bytes are also read as
// a list of ids (including out-of-range ones) to decode. Invariants, checked with abort() so the
// fuzzer reports them: ids are in the vocabulary, every text is valid UTF-8, streamed deltas add
// up to decode(), and ASCII text survives a byte-level round trip.
// env: MACSERVE_SHARED_DIR (set by ctest) locates ../shared; without it the target does nothing.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "macserve/tokenizer/tokenizer.h"

namespace {

using macserve::tokenizer::IncrementalDetokenizer;
using macserve::tokenizer::Tokenizer;

struct Target {
  std::unique_ptr<Tokenizer> tok;
  bool byte_level;  // lossless for ASCII
};

std::vector<Target> load_targets() {
  std::vector<Target> targets;
  const char* shared = std::getenv("MACSERVE_SHARED_DIR");
  if (shared == nullptr) return targets;
  const std::string dir = shared;
  const std::pair<const char*, bool> files[] = {{"/tokenizers/qwen3/tokenizer.json", true},
                                                {"/models/stories260K/tokenizer.json", false},
                                                {"/tokenizers/llama2/tokenizer.model", false}};
  for (const auto& [file, byte_level] : files)
    if (std::filesystem::exists(dir + file))
      targets.push_back({macserve::tokenizer::load_tokenizer(dir + file), byte_level});
  return targets;
}

void fail(const char* what, const Tokenizer& tok) {
  std::fprintf(stderr, "tokenizer_fuzz: %s (vocab %lld)\n", what,
               static_cast<long long>(tok.vocab_size()));
  std::abort();
}

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    const int n = b < 0x80                   ? 1
                  : (b >= 0xC2 && b <= 0xDF) ? 2
                  : (b >= 0xE0 && b <= 0xEF) ? 3
                  : (b >= 0xF0 && b <= 0xF4) ? 4
                                             : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (int k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    const auto b1 = static_cast<unsigned char>(n > 1 ? s[i + 1] : 0);
    if ((b == 0xE0 && b1 < 0xA0) || (b == 0xED && b1 > 0x9F) || (b == 0xF0 && b1 < 0x90) ||
        (b == 0xF4 && b1 > 0x8F))
      return false;
    i += n;
  }
  return true;
}

void check_decodes(const Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (const bool skip : {false, true}) {
    const std::string full = tok.decode(ids, skip);
    if (!valid_utf8(full)) fail("decode() is not valid UTF-8", tok);
    IncrementalDetokenizer detok(tok, skip);
    std::string streamed;
    for (const int32_t id : ids) {
      const std::string delta = detok.push(id);
      if (!valid_utf8(delta)) fail("a delta is not valid UTF-8", tok);
      streamed += delta;
    }
    streamed += detok.flush();
    if (streamed != full) fail("streamed deltas differ from decode()", tok);
  }
}

void check_text(const Target& t, std::string_view text) {
  const auto ids = t.tok->encode(text, true);
  for (const int32_t id : ids)
    if (id < 0 || id >= t.tok->vocab_size())
      fail("encode() gave an id outside the vocabulary", *t.tok);
  check_decodes(*t.tok, ids);
  bool ascii = true;
  for (const char c : text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (t.byte_level && ascii && t.tok->decode(t.tok->encode(text, false), false) != text)
    fail("ASCII text does not round-trip", *t.tok);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<Target> targets = load_targets();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (const auto& t : targets) {
    check_text(t, text);
    std::vector<int32_t> ids;  // the same bytes as little-endian 24-bit ids, a few past the end
    const auto range = static_cast<uint32_t>(t.tok->vocab_size() + 4);
    for (std::size_t i = 0; i + 2 < size; i += 3)
      ids.push_back(
          static_cast<int32_t>((data[i] | (data[i + 1] << 8) | (data[i + 2] << 16)) % range));
    check_decodes(*t.tok, ids);
  }
  return 0;
}
