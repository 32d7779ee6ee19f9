// macserve-bench datasets: exact token counts with real tokenizers (byte-level BPE, SentencePiece,
// a GGUF vocabulary), vLLM's ShareGPT filter, JSONL prompts, shared prefixes, needles, and clear
// errors naming the file and line for malformed files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "macserve/core/error.h"
#include "macserve/loadgen/dataset.h"
#include "test_paths.h"

namespace macserve::loadgen {
namespace {

std::string model(const std::string& name) { return macserve::testing::models_dir() + "/" + name; }

std::string temp_file(const std::string& name, const std::string& content) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("macserve_loadgen_" + std::to_string(::getpid()) + "_" + name);
  std::ofstream(p) << content;
  return p.string();
}

void expect_exact(const tokenizer::Tokenizer& tok, const std::vector<SampleRequest>& s) {
  for (const auto& r : s) {
    EXPECT_EQ(r.prompt_len, count_prompt_tokens(tok, r.prompt));
    EXPECT_EQ(static_cast<int64_t>(tok.encode(r.prompt, true).size()), r.prompt_len);
  }
}

void check_random(const std::string& tok_path) {
  MACSERVE_REQUIRE_PATH(tok_path);
  const auto tok = load_bench_tokenizer(tok_path);
  DatasetOptions o;
  o.num_prompts = 24;
  o.random_input_len = 120;
  o.random_output_len = 16;
  o.random_range_ratio = 0.5;
  o.seed = 3;
  const auto s = random_dataset(o, *tok);
  ASSERT_EQ(s.size(), 24u);
  std::set<int64_t> lens;
  for (const auto& r : s) {
    EXPECT_GE(r.prompt_len, 60);
    EXPECT_LE(r.prompt_len, 180);
    EXPECT_GE(r.output_len, 8);
    EXPECT_LE(r.output_len, 24);
    lens.insert(r.prompt_len);
  }
  EXPECT_GT(lens.size(), 5u);  // the lengths really vary
  expect_exact(*tok, s);
  // Fixed lengths are met exactly, every time, and the seed fixes the prompts.
  o.random_range_ratio = 0;
  o.random_input_len = 257;
  const auto fixed = random_dataset(o, *tok);
  for (const auto& r : fixed) EXPECT_EQ(r.prompt_len, 257) << tok_path;
  expect_exact(*tok, fixed);
  EXPECT_EQ(random_dataset(o, *tok)[5].prompt, fixed[5].prompt);
  o.seed = 4;
  EXPECT_NE(random_dataset(o, *tok)[5].prompt, fixed[5].prompt);
}

TEST(LoadgenDataset, RandomPromptsHaveExactTokenCountsByteLevelBpe) {
  check_random(model("tiny-qwen2-bpe"));
}
TEST(LoadgenDataset, RandomPromptsHaveExactTokenCountsSentencePiece) {
  check_random(model("tiny-llama-sp"));
}
TEST(LoadgenDataset, RandomPromptsHaveExactTokenCountsLlama3) {
  check_random(macserve::testing::shared_dir() + "/tokenizers/llama3.1");
}

TEST(LoadgenDataset, GgufVocabularyTokenizer) {
  check_random(macserve::testing::default_model_path());
}

TEST(LoadgenDataset, RandomPrefixIsSharedAndCounted) {
  MACSERVE_REQUIRE_PATH(model("tiny-llama-sp"));
  const auto tok = load_bench_tokenizer(model("tiny-llama-sp"));
  DatasetOptions o;
  o.num_prompts = 6;
  o.random_input_len = 40;
  o.random_prefix_len = 64;
  const auto s = random_dataset(o, *tok);
  for (const auto& r : s) EXPECT_EQ(r.prompt_len, 104);
  // Every prompt starts with the same text, the prefix (at least 64 tokens' worth of it).
  const std::string head = s[0].prompt.substr(0, 100);
  for (const auto& r : s) EXPECT_EQ(r.prompt.substr(0, 100), head);
}

TEST(LoadgenDataset, PrefixRepetitionUsesFewPrefixes) {
  MACSERVE_REQUIRE_PATH(model("tiny-qwen2-bpe"));
  const auto tok = load_bench_tokenizer(model("tiny-qwen2-bpe"));
  DatasetOptions o;
  o.num_prompts = 12;
  o.prefix_repetition_prefix_len = 48;
  o.prefix_repetition_suffix_len = 16;
  o.prefix_repetition_num_prefixes = 3;
  o.prefix_repetition_output_len = 5;
  const auto s = prefix_repetition_dataset(o, *tok);
  ASSERT_EQ(s.size(), 12u);
  std::set<std::string> heads;
  for (const auto& r : s) {
    EXPECT_EQ(r.prompt_len, 64);
    EXPECT_EQ(r.output_len, 5);
    heads.insert(r.prompt.substr(0, 120));
  }
  EXPECT_EQ(heads.size(), 3u);
  expect_exact(*tok, s);
}

TEST(LoadgenDataset, ShareGptFollowsVllmsFilter) {
  const std::string path = macserve::testing::shared_dir() + "/data/sharegpt_format_sample.json";
  MACSERVE_REQUIRE_PATH(path);
  MACSERVE_REQUIRE_PATH(model("tiny-qwen2-bpe"));
  const auto tok = load_bench_tokenizer(model("tiny-qwen2-bpe"));
  DatasetOptions o;
  o.name = "sharegpt";
  o.path = path;
  o.num_prompts = 30;
  const auto s = load_dataset(o, *tok);
  ASSERT_EQ(s.size(), 30u);
  for (const auto& r : s) {
    EXPECT_GE(r.prompt_len, 4);
    EXPECT_GE(r.output_len, 4);
    EXPECT_LE(r.prompt_len, 1024);
    EXPECT_LE(r.prompt_len + r.output_len, 2048);
  }
  expect_exact(*tok, s);
  o.sharegpt_output_len = 7;
  for (const auto& r : load_dataset(o, *tok)) EXPECT_EQ(r.output_len, 7);
}

TEST(LoadgenDataset, MalformedFilesNameTheFileAndLine) {
  MACSERVE_REQUIRE_PATH(model("tiny-qwen2-bpe"));
  const auto tok = load_bench_tokenizer(model("tiny-qwen2-bpe"));
  auto message = [&](const DatasetOptions& o) -> std::string {
    try {
      load_dataset(o, *tok);
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  DatasetOptions o;
  o.name = "sharegpt";
  o.path = temp_file("bad.json", "[\n  {\"conversations\": []},\n  {\"conversations\": [}\n]\n");
  EXPECT_NE(message(o).find(o.path + ":3:"), std::string::npos) << message(o);
  o.path = temp_file("notlist.json", "[{\"id\": 1}]");
  EXPECT_NE(message(o).find("entry 0 has no \"conversations\""), std::string::npos) << message(o);
  o.path = "/nonexistent/sharegpt.json";
  EXPECT_NE(message(o).find("cannot open"), std::string::npos);
  o.name = "custom";
  o.path = temp_file("bad.jsonl", "{\"prompt\": \"one\"}\n\n{\"prompt\": \"two\"\n");
  EXPECT_NE(message(o).find(o.path + ":3:"), std::string::npos) << message(o);
  o.path = temp_file("noprompt.jsonl", "{\"prompt\": \"one\"}\n{\"text\": \"two\"}\n");
  EXPECT_NE(message(o).find(o.path + ":2: expected an object with a \"prompt\""), std::string::npos)
      << message(o);
  o.path.clear();
  EXPECT_NE(message(o).find("needs --dataset-path"), std::string::npos);
  o.name = "nope";
  EXPECT_NE(message(o).find("unknown dataset"), std::string::npos);
}

TEST(LoadgenDataset, CustomJsonlTakesPromptsAndMtBenchTurns) {
  MACSERVE_REQUIRE_PATH(model("tiny-qwen2-bpe"));
  const auto tok = load_bench_tokenizer(model("tiny-qwen2-bpe"));
  DatasetOptions o;
  o.name = "custom";
  o.num_prompts = 4;
  o.custom_output_len = 9;
  o.path = temp_file("ok.jsonl",
                     "{\"prompt\": \"Tell me a story.\"}\n{\"prompt\": \"Name a colour.\"}\n");
  const auto s = load_dataset(o, *tok);
  ASSERT_EQ(s.size(), 4u);  // two lines, drawn again to reach --num-prompts
  for (const auto& r : s) EXPECT_EQ(r.output_len, 9);
  expect_exact(*tok, s);
  const std::string mt = macserve::testing::shared_dir() + "/data/mt_bench_questions.jsonl";
  if (macserve::testing::exists(mt)) {
    o.path = mt;
    o.num_prompts = 10;
    const auto q = load_dataset(o, *tok);
    ASSERT_EQ(q.size(), 10u);
    for (const auto& r : q) EXPECT_GT(r.prompt_len, 5);
  }
}

TEST(LoadgenDataset, LongContextHidesACheckableNeedle) {
  MACSERVE_REQUIRE_PATH(model("tiny-llama-sp"));
  const auto tok = load_bench_tokenizer(model("tiny-llama-sp"));
  DatasetOptions o;
  o.name = "long-context";
  o.num_prompts = 3;
  o.long_context_input_len = 700;
  const auto s = load_dataset(o, *tok);
  ASSERT_EQ(s.size(), 3u);
  for (const auto& r : s) {
    EXPECT_EQ(r.prompt_len, 700);
    ASSERT_EQ(r.answer.size(), 7u);
    EXPECT_NE(r.prompt.find("is " + r.answer + "."), std::string::npos);
    EXPECT_NE(r.prompt.find("Question: What is the special magic number"), std::string::npos);
  }
  expect_exact(*tok, s);
  // A text file as the haystack; depth 0 puts the needle first.
  std::string text;
  for (int i = 0; i < 400; ++i)
    text += "In the morning the ferry left the harbour and crossed to the island. ";
  o.path = temp_file("hay.txt", text);
  o.long_context_depth = 0;
  const auto f = load_dataset(o, *tok);
  for (const auto& r : f) {
    EXPECT_EQ(r.prompt_len, 700);
    EXPECT_LT(r.prompt.find(r.answer), 80u);
  }
  EXPECT_TRUE(reply_has_answer(" 4821937, as stated.", "4821937"));
  EXPECT_TRUE(reply_has_answer(" 4 821 937", "4821937"));
  EXPECT_FALSE(reply_has_answer(" 4821936", "4821937"));
  EXPECT_FALSE(reply_has_answer("anything", ""));
}

TEST(LoadgenDataset, BadOptionsAreRejected) {
  MACSERVE_REQUIRE_PATH(model("tiny-qwen2-bpe"));
  const auto tok = load_bench_tokenizer(model("tiny-qwen2-bpe"));
  DatasetOptions o;
  o.random_range_ratio = 1.5;
  EXPECT_THROW(random_dataset(o, *tok), Error);
  o = DatasetOptions{};
  o.random_input_len = 0;
  EXPECT_THROW(random_dataset(o, *tok), Error);
  EXPECT_THROW(load_bench_tokenizer("/nonexistent/tok"), Error);
}

}  // namespace
}  // namespace macserve::loadgen
