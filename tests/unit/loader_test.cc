// Loader: safetensors (single, sharded), GGUF (dequantisation, llama q/k un-permutation, config and
// vocab from metadata), dummy weights, format detection, and malformed files, which must all be
// a macserve::Error naming the file (and the tensor), never a crash. Reference values come from the
// Python safetensors/gguf readers (scripts/gen_loader_fixtures.py).
#include <gtest/gtest.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>

#include <nlohmann/json.hpp>

#include "macserve/core/error.h"
#include "macserve/models/loader/checkpoint.h"
#include "macserve/models/loader/gguf.h"
#include "macserve/models/loader/safetensors.h"
#include "test_paths.h"

namespace macserve::models {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using Bytes = std::string;  // raw file contents

// ---- helpers ------------------------------------------------------------------------------------

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "loader_test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (fs::path(path_) / name).string(); }
  const std::string& str() const { return path_; }

 private:
  std::string path_;
};

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

json read_json(const std::string& path) { return json::parse(std::ifstream(path)); }

template <typename T>
Bytes pod(T v) {
  return Bytes(reinterpret_cast<const char*>(&v), sizeof(v));
}

// Runs fn, expecting a macserve::Error with `code` whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, ErrorCode code, std::vector<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error thrown; expected one containing '"
                  << (parts.empty() ? "" : parts.front()) << "'";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
  }
}

std::vector<float> iota_values(int64_t n, float scale) {
  std::vector<float> v(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[static_cast<std::size_t>(i)] = scale * static_cast<float>(i % 97 - 48);
  return v;
}

// safetensors file from (name, dtype, shape, raw bytes) entries; `pad` sets the header alignment.
struct StEntry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  Bytes data;
};

Bytes safetensors_file(const std::vector<StEntry>& entries, std::size_t pad = 8) {
  json header = {{"__metadata__", {{"format", "pt"}}}};
  Bytes data;
  for (const auto& e : entries) {
    header[e.name] = {{"dtype", e.dtype},
                      {"shape", e.shape},
                      {"data_offsets", {data.size(), data.size() + e.data.size()}}};
    data += e.data;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % pad != 0 || (pad == 3 && (8 + h.size()) % 4 == 0)) h += ' ';
  return pod<uint64_t>(h.size()) + h + data;
}

Bytes raw_header_file(const std::string& header, const Bytes& data = {}) {
  return pod<uint64_t>(header.size()) + header + data;
}

// A tiny Llama config (or Qwen2/3 with `arch`), and an HF directory of it with F32 weights.
json tiny_config(const std::string& arch = "LlamaForCausalLM", bool tied = true) {
  return {{"architectures", {arch}}, {"hidden_size", 16},          {"intermediate_size", 32},
          {"num_hidden_layers", 2},  {"num_attention_heads", 4},   {"num_key_value_heads", 2},
          {"head_dim", 4},           {"vocab_size", 24},           {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},   {"tie_word_embeddings", tied}};
}

std::vector<StEntry> tiny_entries(const json& config) {
  const auto shapes = expected_weight_shapes(ModelConfig::from_hf_json(config, "config.json"));
  std::map<std::string, std::vector<int64_t>> sorted(shapes.begin(), shapes.end());
  std::vector<StEntry> entries;
  float scale = 0.001f;
  for (const auto& [name, shape] : sorted) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    const auto v = iota_values(n, scale += 0.001f);
    entries.push_back(
        {name, "F32", shape, Bytes(reinterpret_cast<const char*>(v.data()), v.size() * 4)});
  }
  return entries;
}

void write_hf_dir(const TempDir& dir, const json& config, const std::vector<StEntry>& entries,
                  std::size_t pad = 8) {
  write_file(dir / "config.json", config.dump());
  write_file(dir / "model.safetensors", safetensors_file(entries, pad));
}

StEntry& entry(std::vector<StEntry>& entries, const std::string& name) {
  for (auto& e : entries)
    if (e.name == name) return e;
  throw std::runtime_error("no entry " + name);
}

void expect_expected_set(const Checkpoint& ckpt) {
  const auto expected = expected_weight_shapes(ckpt.config);
  EXPECT_EQ(ckpt.weights.size(), expected.size());
  for (const auto& [name, shape] : expected) {
    auto it = ckpt.weights.find(name);
    ASSERT_NE(it, ckpt.weights.end()) << name;
    EXPECT_EQ(it->second.shape(), shape) << name;
    EXPECT_EQ(it->second.dtype(), DType::kF32) << name;
  }
}

// Compares a tensor with a fixture entry {shape, index, value, sum}: sampled elements exactly,
// the float64 sum to rounding.
void expect_samples(const Tensor& t, const json& fx, const std::string& name) {
  EXPECT_EQ(t.shape(), fx["shape"].get<std::vector<int64_t>>()) << name;
  const float* p = t.data_as<float>();
  const auto idx = fx["index"].get<std::vector<int64_t>>();
  const auto val = fx["value"].get<std::vector<double>>();
  for (std::size_t i = 0; i < idx.size(); ++i)
    EXPECT_EQ(p[idx[i]], static_cast<float>(val[i])) << name << " element " << idx[i];
  double sum = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) sum += p[i];
  EXPECT_NEAR(sum, fx["sum"].get<double>(), 1e-9 * (1.0 + std::abs(fx["sum"].get<double>())))
      << name;
}

std::string fixture(const std::string& name) { return testing::fixtures_dir() + "/loader/" + name; }

// ---- Hugging Face safetensors ---------------------------------------------------------------

class SharedModel : public ::testing::TestWithParam<std::string> {};

TEST_P(SharedModel, LoadsExpectedTensorsWithReferenceValues) {
  const std::string dir = testing::models_dir() + "/" + GetParam();
  MACSERVE_REQUIRE_PATH(dir);
  const Checkpoint ckpt = load_checkpoint(dir);
  EXPECT_EQ(ckpt.format, LoadFormat::kSafetensors);
  EXPECT_EQ(ckpt.path, dir);
  EXPECT_FALSE(ckpt.gguf_vocab.has_value());
  expect_expected_set(ckpt);
  const json fx = read_json(fixture("shared_models.json"))[GetParam()];
  int checked = 0;
  for (const auto& [name, t] : ckpt.weights) {
    ASSERT_TRUE(fx.contains(name)) << name;
    expect_samples(t, fx[name], name);
    ++checked;
  }
  EXPECT_GT(checked, 40);
}

INSTANTIATE_TEST_SUITE_P(Loader, SharedModel,
                         ::testing::Values("stories260K", "tiny-llama-sp", "tiny-qwen2-bpe",
                                           "tiny-qwen3-bpe"),
                         [](const auto& info) {
                           std::string s = info.param;
                           for (char& c : s)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return s;
                         });

TEST(Safetensors, ShardedCopyGivesIdenticalTensors) {
  const std::string src = testing::models_dir() + "/tiny-qwen3-bpe";
  MACSERVE_REQUIRE_PATH(src);
  const Bytes file = read_file(src + "/model.safetensors");
  const auto bytes = std::span(reinterpret_cast<const uint8_t*>(file.data()), file.size());
  const SafetensorsHeader header = parse_safetensors_header(bytes, "model.safetensors");
  std::vector<StEntry> shards[2];
  json weight_map;
  int k = 0;
  for (const auto& [name, info] : header.tensors) {
    const int s = k++ % 2;
    shards[s].push_back({name, info.dtype, info.shape,
                         file.substr(header.data_offset + info.begin, info.end - info.begin)});
    weight_map[name] = fmt::format("model-0000{}-of-00002.safetensors", s + 1);
  }
  TempDir dir;
  fs::copy_file(src + "/config.json", dir / "config.json");
  for (int s = 0; s < 2; ++s)
    write_file(dir / fmt::format("model-0000{}-of-00002.safetensors", s + 1),
               safetensors_file(shards[s]));
  write_file(dir / "model.safetensors.index.json",
             json{{"metadata", json::object()}, {"weight_map", weight_map}}.dump());

  const Checkpoint a = load_checkpoint(src), b = load_checkpoint(dir.str());
  ASSERT_EQ(a.weights.size(), b.weights.size());
  for (const auto& [name, t] : a.weights) {
    const Tensor& u = b.weights.at(name);
    ASSERT_EQ(t.shape(), u.shape()) << name;
    EXPECT_EQ(std::memcmp(t.data(), u.data(), t.nbytes()), 0) << name;
  }
  // An index that sends a tensor to the wrong shard names the shard and the tensor.
  const std::string moved = "model.layers.0.self_attn.q_proj.weight";
  weight_map[moved] = weight_map[moved] == "model-00001-of-00002.safetensors"
                          ? "model-00002-of-00002.safetensors"
                          : "model-00001-of-00002.safetensors";
  write_file(dir / "model.safetensors.index.json", json{{"weight_map", weight_map}}.dump());
  expect_error([&] { load_checkpoint(dir.str()); }, ErrorCode::kInvalidModel,
               {weight_map[moved].get<std::string>(), moved});
}

TEST(Safetensors, F16BF16AndUnalignedF32Convert) {
  TempDir dir;
  json config = tiny_config();
  auto entries = tiny_entries(config);
  const std::vector<uint16_t> half = {0x3c00, 0xc000, 0x3555,
                                      0x0001};  // 1, -2, 0.333, smallest subnormal
  StEntry& norm = entry(entries, "model.norm.weight");
  Bytes h;
  for (int i = 0; i < 16; ++i) h += pod<uint16_t>(half[i % 4]);
  norm.dtype = "F16";
  norm.data = h;
  StEntry& ln = entry(entries, "model.layers.1.input_layernorm.weight");
  ln.dtype = "BF16";
  ln.data.clear();
  for (int i = 0; i < 16; ++i)
    ln.data += pod<uint16_t>(float_to_bf16(0.5f + static_cast<float>(i)));
  entries.push_back(
      {"model.layers.0.self_attn.rotary_emb.inv_freq", "I64", {2}, Bytes(16, '\0')});  // ignored
  entries.push_back(
      {"lm_head.weight", "F32", {3}, Bytes(12, '\0')});  // tied: ignored, shape unchecked
  write_hf_dir(dir, config, entries, /*pad=*/3);  // an odd header length: F32 data is unaligned
  const Checkpoint ckpt = load_checkpoint(dir.str());
  expect_expected_set(ckpt);
  const float* n = ckpt.weights.at("model.norm.weight").data_as<float>();
  EXPECT_EQ(n[0], 1.0f);
  EXPECT_EQ(n[1], -2.0f);
  EXPECT_EQ(n[2], half_to_float(0x3555));
  EXPECT_EQ(n[3], std::ldexp(1.0f, -24));
  EXPECT_EQ(ckpt.weights.at("model.layers.1.input_layernorm.weight").data_as<float>()[3], 3.5f);
  const StEntry& q = entry(entries, "model.layers.1.self_attn.q_proj.weight");
  const Tensor& qt = ckpt.weights.at(q.name);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(qt.data()) % 4, 0u);
  EXPECT_EQ(std::memcmp(qt.data(), q.data.data(), q.data.size()), 0);
}

TEST(Safetensors, MalformedFilesAreErrorsNamingFileAndTensor) {
  const json config = tiny_config();
  const std::string q = "model.layers.0.self_attn.q_proj.weight";
  auto load_with = [&](const Bytes& st, ErrorCode code, std::vector<std::string> parts) {
    TempDir dir;
    write_file(dir / "config.json", config.dump());
    write_file(dir / "model.safetensors", st);
    parts.push_back(dir / "model.safetensors");
    expect_error([&] { load_checkpoint(dir.str()); }, code, parts);
  };
  const Bytes good = safetensors_file(tiny_entries(config));
  load_with(good.substr(0, 5), ErrorCode::kInvalidModel, {"truncated"});
  load_with(good.substr(0, good.size() - 7), ErrorCode::kInvalidModel,
            {"outside the data section"});
  load_with(pod<uint64_t>(1000) + "{}", ErrorCode::kInvalidModel,
            {"header length 1000 is larger than the file"});
  load_with(pod<uint64_t>(uint64_t{1} << 62) + "{}", ErrorCode::kInvalidModel, {"exceeds"});
  load_with(raw_header_file("{\"a\": [1, 2,, garbage"), ErrorCode::kInvalidModel,
            {"not valid JSON"});
  load_with(raw_header_file("[1, 2]"), ErrorCode::kInvalidModel, {"not a JSON object"});
  const std::string q_entry =
      "{\"" + q + "\": {\"dtype\": \"F32\", \"shape\": [16, 16], \"data_offsets\": ";
  load_with(raw_header_file(q_entry + "[0, 18446744073709551615]}}", Bytes(1024, '\0')),
            ErrorCode::kInvalidModel, {q, "outside the data section"});
  load_with(raw_header_file(q_entry + "[0, 1000]}}", Bytes(1024, '\0')), ErrorCode::kInvalidModel,
            {q, "needs 1024 bytes"});
  load_with(
      raw_header_file("{\"" + q +
                      "\": {\"dtype\": \"F32\", \"shape\": [-16, 16], \"data_offsets\": [0, 0]}}"),
      ErrorCode::kInvalidModel, {q, "non-negative"});
  load_with(
      raw_header_file("{\"" + q +
                      "\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296],"
                      " \"data_offsets\": [0, 0]}}"),
      ErrorCode::kInvalidModel, {q});
  load_with(
      raw_header_file(
          "{\"" + q + "\": {\"dtype\": \"Q7\", \"shape\": [1], \"data_offsets\": [0, 1]}}", "x"),
      ErrorCode::kUnsupported, {q, "Q7"});
  load_with(raw_header_file("{\"" + q + "\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", "xxxx"),
            ErrorCode::kInvalidModel, {q, "dtype"});

  auto entries = tiny_entries(config);
  entries.erase(entries.begin());  // sorted: the first is model.embed_tokens.weight
  load_with(safetensors_file(entries), ErrorCode::kInvalidModel,
            {"missing tensor 'model.embed_tokens.weight'"});
  entries = tiny_entries(config);
  entry(entries, q).shape = {16, 8, 2};
  load_with(safetensors_file(entries), ErrorCode::kInvalidModel,
            {"tensor '" + q + "' has shape [16, 8, 2], expected [16, 16]"});
  entries = tiny_entries(config);
  entry(entries, q).dtype = "I32";
  load_with(safetensors_file(entries), ErrorCode::kUnsupported, {q, "I32"});
}

TEST(Safetensors, ConfigAndLmHeadProblems) {
  TempDir dir;
  write_hf_dir(dir, tiny_config("GPT2LMHeadModel"), tiny_entries(tiny_config()));
  expect_error([&] { load_checkpoint(dir.str()); }, ErrorCode::kUnsupported,
               {dir / "config.json", "architecture 'GPT2LMHeadModel'"});
  fs::remove(dir / "config.json");
  expect_error([&] { load_checkpoint(dir.str()); }, ErrorCode::kNotFound,
               {dir.str(), "config.json"});
  expect_error([&] { load_checkpoint(dir.str(), LoadFormat::kSafetensors); }, ErrorCode::kNotFound,
               {"config.json"});
  // Untied without lm_head.weight: an error naming it. With it: loaded.
  const json untied = tiny_config("Qwen2ForCausalLM", false);
  auto entries = tiny_entries(untied);
  std::erase_if(entries, [](const StEntry& e) { return e.name == "lm_head.weight"; });
  write_hf_dir(dir, untied, entries);
  expect_error([&] { load_checkpoint(dir.str()); }, ErrorCode::kInvalidModel,
               {"lm_head.weight", dir.str()});
  write_hf_dir(dir, untied, tiny_entries(untied));
  const Checkpoint ckpt = load_checkpoint(dir.str());
  expect_expected_set(ckpt);
  EXPECT_TRUE(ckpt.weights.count("lm_head.weight"));
  EXPECT_TRUE(ckpt.weights.count("model.layers.1.self_attn.v_proj.bias"));
}

TEST(Loader, FormatDetection) {
  TempDir dir;
  expect_error([&] { load_checkpoint(dir / "nope"); }, ErrorCode::kNotFound, {"nope"});
  write_file(dir / "config.json", tiny_config().dump());
  expect_error([&] { load_checkpoint(dir.str()); }, ErrorCode::kNotFound,
               {dir.str(), "safetensors"});
  write_file(dir / "weights.bin", "hello");
  expect_error([&] { load_checkpoint(dir / "weights.bin"); }, ErrorCode::kInvalidModel,
               {"weights.bin"});
  // GGUF magic is enough without the extension.
  MACSERVE_REQUIRE_PATH(fixture("tiny_qwen2.gguf"));
  fs::copy_file(fixture("tiny_qwen2.gguf"), dir / "model.bin");
  EXPECT_EQ(load_checkpoint(dir / "model.bin").format, LoadFormat::kGguf);
  EXPECT_EQ(parse_load_format("gguf"), LoadFormat::kGguf);
  EXPECT_THROW(parse_load_format("pickle"), Error);
}

// ---- GGUF ---------------------------------------------------------------------------------------

class GgufFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(GgufFixture, DequantisesToReferenceValues) {
  const json fx = read_json(fixture("gguf_expected.json"))[GetParam()];
  const Checkpoint ckpt = load_checkpoint(fixture(fx["file"].get<std::string>()));
  EXPECT_EQ(ckpt.format, LoadFormat::kGguf);
  const ModelConfig& c = ckpt.config;
  const json& fc = fx["config"];
  const std::map<std::string, std::string> arch = {
      {"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}, {"qwen3", "Qwen3ForCausalLM"}};
  EXPECT_EQ(c.architecture, arch.at(fx["arch"].get<std::string>()));
  EXPECT_EQ(c.num_layers, fc["layers"].get<int64_t>());
  EXPECT_EQ(c.hidden_size, fc["hidden"].get<int64_t>());
  EXPECT_EQ(c.intermediate_size, fc["ffn"].get<int64_t>());
  EXPECT_EQ(c.num_q_heads, fc["heads"].get<int64_t>());
  EXPECT_EQ(c.num_kv_heads, fc["kv_heads"].get<int64_t>());
  EXPECT_EQ(c.head_dim, fc.value("key_length", c.hidden_size / c.num_q_heads));
  EXPECT_EQ(c.max_position_embeddings, fc["ctx"].get<int64_t>());
  EXPECT_EQ(c.rope_theta, fc["rope_theta"].get<float>());
  EXPECT_EQ(c.rms_norm_eps, fc["eps"].get<float>());
  EXPECT_EQ(c.vocab_size, fx["vocab"]["num_tokens"].get<int64_t>());
  EXPECT_EQ(c.tie_word_embeddings, fx["tied"].get<bool>());
  EXPECT_EQ(c.attention_bias, fx["arch"] == "qwen2");
  EXPECT_EQ(c.qk_norm, fx["arch"] == "qwen3");
  if (fx.contains("rope_llama3")) {
    const json& r = fx["rope_llama3"];
    EXPECT_EQ(c.rope_scaling, RopeScaling::kLlama3);
    EXPECT_EQ(c.rope_factor, r["factor"].get<float>());
    EXPECT_EQ(c.rope_low_freq_factor, r["low"].get<float>());
    EXPECT_EQ(c.rope_high_freq_factor, r["high"].get<float>());
    EXPECT_EQ(c.rope_original_max_position, r["original"].get<int64_t>());
  } else {
    EXPECT_EQ(c.rope_scaling, RopeScaling::kNone);
  }
  expect_expected_set(ckpt);
  for (const auto& [name, t] : fx["tensors"].items())
    expect_samples(ckpt.weights.at(name), t, name);

  ASSERT_TRUE(ckpt.gguf_vocab.has_value());
  const VocabData& v = *ckpt.gguf_vocab;
  const json& fv = fx["vocab"];
  EXPECT_EQ(v.model, fv["model"].get<std::string>());
  EXPECT_EQ(v.pre, fv["pre"].get<std::string>());
  EXPECT_EQ(v.tokens.size(), fv["num_tokens"].get<std::size_t>());
  EXPECT_EQ(v.tokens[5], fv["token_5"].get<std::string>());
  EXPECT_EQ(v.scores.size(), v.tokens.size());
  EXPECT_EQ(v.scores[3], -3.0f);
  EXPECT_EQ(v.token_types[1], 3);
  EXPECT_EQ(v.merges.size(), fv["num_merges"].get<std::size_t>());
  EXPECT_EQ(v.bos_id, fv["bos"].get<int64_t>());
  EXPECT_EQ(v.eos_id, fv["eos"].get<int64_t>());
  EXPECT_EQ(v.add_bos, fv["add_bos"].get<bool>());
  EXPECT_EQ(v.chat_template, fv["chat_template"].get<std::string>());
}

INSTANTIATE_TEST_SUITE_P(Loader, GgufFixture,
                         ::testing::Values("tiny_llama", "tiny_qwen2", "tiny_qwen3",
                                           "tiny_llama3_rope"));

// The fixtures store q (and for llama k) of layer 0 as w[r][c] = r + c / 1024 in HF layout; the
// llama file has the rows permuted as llama.cpp's converter does, so this checks the inverse.
TEST(Gguf, UndoesLlamaQkPermutation) {
  for (const char* name : {"tiny_llama.gguf", "tiny_qwen2.gguf"}) {
    const Checkpoint ckpt = load_checkpoint(fixture(name));
    std::vector<std::string> known = {"model.layers.0.self_attn.q_proj.weight"};
    if (ckpt.config.architecture == "LlamaForCausalLM")
      known.push_back("model.layers.0.self_attn.k_proj.weight");
    for (const auto& w : known) {
      const Tensor& t = ckpt.weights.at(w);
      for (int64_t r = 0; r < t.dim(0); ++r)
        for (int64_t c = 0; c < t.dim(1); ++c)
          ASSERT_EQ(t.data_as<float>()[r * t.dim(1) + c],
                    static_cast<float>(r) + static_cast<float>(c) / 1024.0f)
              << name << " " << w << " [" << r << ", " << c << "]";
    }
  }
}

TEST(Gguf, ReadsEveryMetadataType) {
  const std::string path =
      std::string(MACSERVE_SOURCE_DIR) + "/tests/fuzz/corpus/gguf_fuzz/metadata_types.gguf";
  const Bytes file = read_file(path);
  const GgufFile g =
      parse_gguf(std::span(reinterpret_cast<const uint8_t*>(file.data()), file.size()), path);
  EXPECT_EQ(g.version, 3u);
  EXPECT_EQ(g.alignment, 64u);
  EXPECT_TRUE(g.tensors.empty());
  const std::map<std::string, int64_t> ints = {{"u8", 7},
                                               {"i8", -7},
                                               {"u16", 700},
                                               {"i16", -700},
                                               {"u32", 70000},
                                               {"i32", -70000},
                                               {"u64", int64_t{1} << 40},
                                               {"i64", -(int64_t{1} << 40)}};
  for (const auto& [k, v] : ints) {
    ASSERT_NE(g.find(k), nullptr) << k;
    EXPECT_EQ(g.find(k)->as_int(), v) << k;
  }
  EXPECT_EQ(g.find("f32")->as_number(), 0.5);
  EXPECT_EQ(g.find("f64")->as_number(), 0.25);
  EXPECT_EQ(g.find("bool")->type, GgufValueType::kBool);
  EXPECT_EQ(g.find("bool")->u, 1u);
  EXPECT_EQ(g.find("str")->str, "hello");
  EXPECT_FALSE(g.find("str")->as_int().has_value());
  const GgufValue* arr = g.find("arr_str");
  ASSERT_EQ(arr->items.size(), 3u);
  EXPECT_EQ(arr->items[1].str, "bc");
  const GgufValue* nested = g.find("arr_nested");
  EXPECT_EQ(nested->elem_type, GgufValueType::kArray);
  ASSERT_EQ(nested->items.size(), 2u);
  EXPECT_EQ(nested->items[0].items[1].as_int(), 2);
  EXPECT_EQ(nested->items[1].items[0].as_int(), 3);
}

TEST(Gguf, SmolLM2DefaultModel) {
  const std::string path = testing::default_model_path();
  if (!fs::exists(path))
    GTEST_SKIP() << "SmolLM2 GGUF not found at " << path << " (run scripts/fetch_default_model.sh)";
  const auto start = std::chrono::steady_clock::now();
  const Checkpoint ckpt = load_checkpoint(path);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("SmolLM2 GGUF loaded in %.2f s\n", secs);  // information, not a pass/fail criterion
  const ModelConfig& c = ckpt.config;
  EXPECT_EQ(c.architecture, "LlamaForCausalLM");
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_q_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_id, 2);
  expect_expected_set(ckpt);
  EXPECT_EQ(ckpt.weights.size(), 272u);
  const std::map<std::string, std::string> hf = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"},
      {"blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight"},
      {"blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight"},
      {"blk.7.ffn_down.weight", "model.layers.7.mlp.down_proj.weight"},
      {"blk.29.attn_norm.weight", "model.layers.29.input_layernorm.weight"},
      {"blk.29.ffn_up.weight", "model.layers.29.mlp.up_proj.weight"}};
  const json fx = read_json(fixture("smollm2_samples.json"));
  EXPECT_EQ(fx.size(), hf.size());
  for (const auto& [g, t] : fx.items()) expect_samples(ckpt.weights.at(hf.at(g)), t, g);
  ASSERT_TRUE(ckpt.gguf_vocab.has_value());
  const VocabData& v = *ckpt.gguf_vocab;
  EXPECT_EQ(v.model, "gpt2");
  EXPECT_EQ(v.pre, "smollm");
  EXPECT_EQ(v.tokens.size(), 49152u);
  EXPECT_EQ(v.merges.size(), 48900u);
  EXPECT_EQ(v.token_types.size(), 49152u);
  EXPECT_EQ(v.bos_id, 1);
  EXPECT_EQ(v.eos_id, 2);
  EXPECT_EQ(v.unk_id, 0);
  EXPECT_EQ(v.pad_id, 2);
  EXPECT_FALSE(v.add_bos);
  EXPECT_FALSE(v.add_space_prefix);
  EXPECT_NE(v.chat_template.find("im_start"), std::string::npos);
}

// A GGUF writer for malformed files: metadata and F32 tensors, with knobs to corrupt them.
struct GgufTensorSpec {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order
  uint32_t type = 0;
  Bytes data;
  std::optional<uint64_t> offset;  // override
};

struct GgufSpec {
  uint32_t version = 3;
  std::vector<std::pair<std::string, Bytes>> kv;  // key -> u32 type + value bytes
  std::vector<GgufTensorSpec> tensors;

  void str(const std::string& k, const std::string& v) {
    kv.emplace_back(k, pod<uint32_t>(8) + pod<uint64_t>(v.size()) + v);
  }
  void u32(const std::string& k, uint32_t v) { kv.emplace_back(k, pod<uint32_t>(4) + pod(v)); }
  void f32(const std::string& k, float v) { kv.emplace_back(k, pod<uint32_t>(6) + pod(v)); }

  Bytes build() const {
    Bytes out = "GGUF" + pod(version) + pod<uint64_t>(tensors.size()) + pod<uint64_t>(kv.size());
    for (const auto& [k, v] : kv) out += pod<uint64_t>(k.size()) + k + v;
    Bytes data;
    for (const auto& t : tensors) {
      out += pod<uint64_t>(t.name.size()) + t.name + pod<uint32_t>(t.dims.size());
      for (auto d : t.dims) out += pod(d);
      out += pod(t.type) + pod<uint64_t>(t.offset.value_or(data.size()));
      data += t.data;
      data.resize((data.size() + 31) / 32 * 32, '\0');
    }
    out.resize((out.size() + 31) / 32 * 32, '\0');
    return out + data;
  }
};

// A valid tiny llama GGUF (F32 weights) built from expected_weight_shapes of its config.
GgufSpec tiny_gguf(const std::string& arch = "llama") {
  GgufSpec g;
  g.str("general.architecture", arch);
  g.u32(arch + ".block_count", 1);
  g.u32(arch + ".embedding_length", 32);
  g.u32(arch + ".feed_forward_length", 32);
  g.u32(arch + ".attention.head_count", 2);
  g.u32(arch + ".attention.head_count_kv", 1);
  g.u32(arch + ".vocab_size", 8);
  g.f32(arch + ".attention.layer_norm_rms_epsilon", 1e-5f);
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.vocab_size = 8, c.hidden_size = 32, c.intermediate_size = 32, c.num_layers = 1;
  c.num_q_heads = 2, c.num_kv_heads = 1, c.head_dim = 16, c.tie_word_embeddings = true;
  const std::map<std::string, std::string> to_gguf = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  const auto shapes = expected_weight_shapes(c);
  for (const auto& [name, shape] : std::map(shapes.begin(), shapes.end())) {
    const std::string local = name.rfind("model.layers.0.", 0) == 0 ? name.substr(15) : name;
    const std::string gname = (local == name ? "" : "blk.0.") + to_gguf.at(local);
    const std::vector<uint64_t> dims(shape.rbegin(), shape.rend());
    const auto v = iota_values(shape.size() == 1 ? shape[0] : shape[0] * shape[1], 0.01f);
    g.tensors.push_back(
        {gname, dims, 0, Bytes(reinterpret_cast<const char*>(v.data()), v.size() * 4), {}});
  }
  return g;
}

GgufTensorSpec& gguf_tensor(GgufSpec& g, const std::string& name) {
  for (auto& t : g.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

void expect_gguf_error(const Bytes& file, ErrorCode code, std::vector<std::string> parts) {
  TempDir dir;
  write_file(dir / "m.gguf", file);
  parts.push_back(dir / "m.gguf");
  expect_error([&] { load_checkpoint(dir / "m.gguf"); }, code, parts);
}

void patch(Bytes& b, std::size_t at, uint64_t v) { std::memcpy(b.data() + at, &v, sizeof(v)); }

TEST(Gguf, BuiltTinyFileLoads) {
  TempDir dir;
  write_file(dir / "m.gguf", tiny_gguf().build());
  const Checkpoint ckpt = load_checkpoint(dir / "m.gguf");
  expect_expected_set(ckpt);
  EXPECT_FALSE(ckpt.gguf_vocab.has_value());  // no tokenizer.ggml.tokens
  EXPECT_EQ(ckpt.weights.at("model.norm.weight").data_as<float>()[1], 0.01f * -47.0f);
}

TEST(Gguf, MalformedFilesAreErrors) {
  const Bytes good = tiny_gguf().build();
  expect_gguf_error("GGUX" + good.substr(4), ErrorCode::kInvalidModel, {"bad magic"});
  expect_gguf_error(good.substr(0, 3), ErrorCode::kInvalidModel, {"bad magic"});
  for (std::size_t cut : {8ul, 20ul, 100ul, 400ul, good.size() / 2, good.size() - 1})
    expect_gguf_error(good.substr(0, cut), ErrorCode::kInvalidModel, {});
  Bytes b = good;
  patch(b, 8, uint64_t{1} << 60);  // tensor count
  expect_gguf_error(b, ErrorCode::kInvalidModel, {"tensors"});
  b = good;
  patch(b, 16, uint64_t{1} << 58);  // metadata count
  expect_gguf_error(b, ErrorCode::kInvalidModel, {"metadata"});
  b = good;
  patch(b, 24, uint64_t{1} << 62);  // first key's length
  expect_gguf_error(b, ErrorCode::kInvalidModel, {"truncated", "metadata key"});
  b = good;
  b[4] = 1;  // version 1
  expect_gguf_error(b, ErrorCode::kUnsupported, {"version 1"});
  b = good;
  std::memcpy(b.data() + 4, "\0\0\0\3", 4);
  expect_gguf_error(b, ErrorCode::kUnsupported, {"big-endian"});

  GgufSpec g = tiny_gguf();
  g.kv.emplace_back("tokenizer.ggml.tokens",
                    pod<uint32_t>(9) + pod<uint32_t>(8) + pod<uint64_t>(uint64_t{1} << 61));
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel,
                    {"tokenizer.ggml.tokens", "array elements"});
  g = tiny_gguf();
  Bytes nested = pod<uint32_t>(9);
  for (int i = 0; i < 6; ++i) nested += pod<uint32_t>(9) + pod<uint64_t>(1);
  g.kv.emplace_back("deep", nested + pod<uint32_t>(4) + pod<uint64_t>(0));
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {"deep", "nests"});
  g = tiny_gguf();
  g.kv.emplace_back("odd", pod<uint32_t>(77) + pod<uint32_t>(0));
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {"odd", "value type 77"});
  g = tiny_gguf();
  g.u32("general.alignment", 24);
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {"general.alignment"});
}

TEST(Gguf, BadTensorsAreErrorsNamingTheTensor) {
  const std::string q = "blk.0.attn_q.weight";
  GgufSpec g = tiny_gguf();
  gguf_tensor(g, q).offset = uint64_t{1} << 40;
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {q, "outside the file"});
  g = tiny_gguf();
  gguf_tensor(g, q).offset = 4;
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {q, "alignment"});
  g = tiny_gguf();
  gguf_tensor(g, q).dims = {32, 32, 1, 1, 1};
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {q, "5 dimensions"});
  g = tiny_gguf();
  gguf_tensor(g, q).dims = {uint64_t{1} << 40, uint64_t{1} << 40};
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {q});
  g = tiny_gguf();
  gguf_tensor(g, q).type = 6;  // Q5_0: a valid ggml type, but not one macserve dequantises
  gguf_tensor(g, q).data.resize(32 / 32 * 22 * 32);
  expect_gguf_error(g.build(), ErrorCode::kUnsupported, {q, "Q5_0"});
  g = tiny_gguf();
  gguf_tensor(g, q).type = 99;
  expect_gguf_error(g.build(), ErrorCode::kUnsupported, {q, "99"});
  g = tiny_gguf();
  gguf_tensor(g, q).dims = {32, 16};
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel,
                    {q, "has shape [16, 32], expected [32, 32]"});
  g = tiny_gguf();
  std::erase_if(g.tensors, [&](const GgufTensorSpec& t) { return t.name == q; });
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {"missing tensor", q});
  g = tiny_gguf("gpt2");
  expect_gguf_error(g.build(), ErrorCode::kUnsupported, {"architecture 'gpt2'", "not supported"});
  g = tiny_gguf();
  const std::vector<float> flat_two(8, 2.0f);  // not llama3-shaped: high frequencies must stay 1
  g.tensors.push_back(
      {"rope_freqs.weight", {8}, 0, Bytes(reinterpret_cast<const char*>(flat_two.data()), 32), {}});
  expect_gguf_error(g.build(), ErrorCode::kUnsupported, {"rope_freqs.weight", "llama3"});
  g = tiny_gguf();
  g.kv.erase(g.kv.begin() + 1);  // llama.block_count
  expect_gguf_error(g.build(), ErrorCode::kInvalidModel, {"llama.block_count"});
}

// Every prefix of a real file is an error, never a crash or a huge allocation.
TEST(Gguf, EveryTruncationOfAFixtureIsAnError) {
  const Bytes file = read_file(fixture("tiny_qwen3.gguf"));
  ASSERT_GT(file.size(), 1000u);
  const auto whole = std::span(reinterpret_cast<const uint8_t*>(file.data()), file.size());
  const GgufFile parsed = parse_gguf(whole, "whole");
  uint64_t data_end = 0;  // the writer pads after the last tensor: cutting padding only is harmless
  for (const auto& t : parsed.tensors)
    data_end = std::max(data_end, parsed.data_offset + t.offset + t.nbytes);
  for (std::size_t cut = 0; cut < data_end; cut += 1 + cut / 16) {
    const auto bytes = std::span(reinterpret_cast<const uint8_t*>(file.data()), cut);
    EXPECT_THROW(
        {
          const GgufFile g = parse_gguf(bytes, "cut");
          checkpoint_from_gguf(g, bytes, nullptr, "cut");
        },
        Error)
        << "cut at " << cut;
  }
}

// The fuzz seeds must be valid files, or the replay only ever exercises the first error path.
TEST(Loader, FuzzSeedsAreValid) {
  const std::string corpus = std::string(MACSERVE_SOURCE_DIR) + "/tests/fuzz/corpus/";
  int seeds = 0;
  for (const auto& e : fs::directory_iterator(corpus + "gguf_fuzz")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("tiny_", 0) == 0)
      expect_expected_set(load_checkpoint(e.path().string(), LoadFormat::kGguf));
    const Bytes file = read_file(e.path().string());
    EXPECT_NO_THROW(
        parse_gguf(std::span(reinterpret_cast<const uint8_t*>(file.data()), file.size()), name));
    ++seeds;
  }
  for (const auto& e : fs::directory_iterator(corpus + "safetensors_fuzz")) {
    const Bytes file = read_file(e.path().string());
    const auto bytes = std::span(reinterpret_cast<const uint8_t*>(file.data()), file.size());
    EXPECT_FALSE(parse_safetensors_header(bytes, e.path().string()).tensors.empty());
    ++seeds;
  }
  EXPECT_GE(seeds, 3);
}

// ---- dummy weights ------------------------------------------------------------------------------

TEST(Dummy, DeterministicForASeedWithTheRightShapes) {
  TempDir dir;
  write_file(dir / "config.json", tiny_config("Qwen3ForCausalLM", false).dump());
  const Checkpoint a = load_checkpoint(dir.str(), LoadFormat::kDummy, 7);
  const Checkpoint b = load_checkpoint(dir / "config.json", LoadFormat::kDummy, 7);
  const Checkpoint c = load_checkpoint(dir.str(), LoadFormat::kDummy, 8);
  EXPECT_EQ(a.format, LoadFormat::kDummy);
  expect_expected_set(a);
  EXPECT_TRUE(a.weights.count("model.layers.1.self_attn.k_norm.weight"));
  for (const auto& [name, t] : a.weights) {
    const Tensor& u = b.weights.at(name);
    EXPECT_EQ(std::memcmp(t.data(), u.data(), t.nbytes()), 0) << name;
    const bool is_norm = name.find("norm.weight") != std::string::npos;
    if (is_norm)
      EXPECT_EQ(t.data_as<float>()[t.numel() - 1], 1.0f) << name;
    else
      EXPECT_NE(std::memcmp(t.data(), c.weights.at(name).data(), t.nbytes()), 0) << name;
  }
  // Roughly normal(0, 0.02) over a big matrix; distinct tensors differ.
  const Tensor& e = a.weights.at("lm_head.weight");
  double sum = 0, sq = 0;
  for (int64_t i = 0; i < e.numel(); ++i)
    sum += e.data_as<float>()[i], sq += e.data_as<float>()[i] * e.data_as<float>()[i];
  const double mean = sum / static_cast<double>(e.numel());
  EXPECT_NEAR(mean, 0.0, 0.005);
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(e.numel()) - mean * mean), 0.02, 0.004);
  EXPECT_NE(std::memcmp(e.data(), a.weights.at("model.embed_tokens.weight").data(), e.nbytes()), 0);
}

TEST(Dummy, LargeTensorIsFilledEverywhere) {
  TempDir dir;
  json cfg = tiny_config();
  cfg["vocab_size"] = 70000;  // embed_tokens spans many fill chunks
  write_file(dir / "config.json", cfg.dump());
  const Checkpoint a = load_checkpoint(dir.str(), LoadFormat::kDummy, 1);
  const Tensor& e = a.weights.at("model.embed_tokens.weight");
  int64_t zeros = 0;
  for (int64_t i = 0; i < e.numel(); ++i) zeros += e.data_as<float>()[i] == 0.0f;
  EXPECT_LT(zeros, e.numel() / 1000);
  expect_error([&] { load_checkpoint(dir / "missing", LoadFormat::kDummy); }, ErrorCode::kNotFound,
               {"config.json"});
}

TEST(Loader, ExpectedShapesFollowTheConfig) {
  ModelConfig c = ModelConfig::from_hf_json(tiny_config("Qwen2ForCausalLM", true), "c");
  auto s = expected_weight_shapes(c);
  EXPECT_EQ(s.size(), 2u + 2u * 12u);
  EXPECT_EQ(s.at("model.layers.1.self_attn.k_proj.bias"), (std::vector<int64_t>{8}));
  EXPECT_EQ(s.at("model.layers.0.self_attn.o_proj.weight"), (std::vector<int64_t>{16, 16}));
  EXPECT_FALSE(s.count("lm_head.weight"));
  c = ModelConfig::from_hf_json(tiny_config("Qwen3ForCausalLM", false), "c");
  s = expected_weight_shapes(c);
  EXPECT_EQ(s.size(), 3u + 2u * 11u);
  EXPECT_EQ(s.at("model.layers.0.self_attn.q_norm.weight"), (std::vector<int64_t>{4}));
  EXPECT_EQ(s.at("lm_head.weight"), (std::vector<int64_t>{24, 16}));
}

}  // namespace
}  // namespace macserve::models
