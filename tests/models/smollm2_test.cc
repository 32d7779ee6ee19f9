// The embedded default model, SmolLM2-135M-Instruct (Q4_1 GGUF): parity with transformers on the
// same dequantised weights (scripts/gen_smollm2_reference.py), its GGUF tokenizer, and a chat
// answer through the engine that reads as English.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include <nlohmann/json.hpp>

#include "macserve/engine/engine.h"
#include "macserve/tokenizer/tokenizer.h"
#include "models/model_harness.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

std::string gguf_path() {
  if (const char* env = std::getenv("MACSERVE_DEFAULT_MODEL")) return env;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : ".") + "/.cache/macserve/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

nlohmann::json reference() {
  std::ifstream f(fixtures_dir() + "/smollm2/reference.json");
  return nlohmann::json::parse(f);
}

// Logits are O(10-30); float32 sums in another order differ by ~1e-4 relative.
constexpr double kLogitTol = 3e-3;

TEST(SmolLM2, GreedyAndLogitsMatchTransformers) {
  MACSERVE_REQUIRE_PATH(gguf_path());
  const auto ref = reference();
  ModelHarness h(gguf_path(), 512);
  for (const auto& s : ref["samples"]) {
    const auto prompt = s["prompt_ids"].get<std::vector<int32_t>>();
    const auto expected = s["greedy_ids"].get<std::vector<int32_t>>();
    std::vector<std::vector<float>> logits;
    const auto got = h.greedy(prompt, static_cast<int>(expected.size()), &logits);
    EXPECT_EQ(got, expected) << "prompt: " << s["prompt"];
    const auto& tops = s["top_logits"];
    for (std::size_t step = 0; step < tops.size(); ++step)
      for (const auto& pair : tops[step])
        EXPECT_NEAR(logits[step][pair[0].get<std::size_t>()], pair[1].get<double>(), kLogitTol)
            << "step " << step << " token " << pair[0];
  }
}

// `--cpu-weights native` (Q4_1/Q8_0 blocks multiplied in place) against the f32 path on the same
// file. Both paths see the same weight values (a 4- or 8-bit integer times an fp16 scale is exact
// in float32, so `q * d + m` rounds once whether fused or not) and sum them in the same fixed
// order, so the logits are bit-identical: measured max |diff| 0 over every position and vocabulary
// entry. Greedy tokens are then the reference's (checked as the argmax of each completion
// position).
TEST(SmolLM2, NativeQuantizedWeightsMatchTheF32Path) {
  MACSERVE_REQUIRE_PATH(gguf_path());
  const auto ref = reference();
  ModelHarness f32(gguf_path(), 512), native(gguf_path(), 512, 16, 7, /*keep_quantized=*/true);
  // Weights in memory: the file's blocks (98 MB file) instead of 513 MiB of float32.
  EXPECT_LT(native.weight_bytes(), f32.weight_bytes() / 4);
  for (const auto& s : ref["samples"]) {
    auto ids = s["prompt_ids"].get<std::vector<int32_t>>();
    const std::size_t prompt_len = ids.size();
    const auto greedy = s["greedy_ids"].get<std::vector<int32_t>>();
    ids.insert(ids.end(), greedy.begin(), greedy.end() - 1);
    const auto a = f32.prefill(ids), b = native.prefill(ids);
    ASSERT_EQ(a.size(), b.size());
    double worst = 0;
    for (std::size_t r = 0; r < a.size(); ++r)
      for (std::size_t v = 0; v < a[r].size(); ++v)
        worst = std::max(worst, std::abs(static_cast<double>(a[r][v]) - b[r][v]));
    EXPECT_EQ(worst, 0.0) << "prompt: " << s["prompt"];
    for (std::size_t i = 0; i < greedy.size(); ++i) {
      const auto& row = b[prompt_len - 1 + i];
      EXPECT_EQ(std::max_element(row.begin(), row.end()) - row.begin(), greedy[i])
          << "completion token " << i;
    }
  }
}

TEST(SmolLM2, GgufTokenizerMatchesTransformers) {
  MACSERVE_REQUIRE_PATH(gguf_path());
  const auto ref = reference();
  const auto ckpt_vocab = models::load_checkpoint(gguf_path()).gguf_vocab;
  ASSERT_TRUE(ckpt_vocab.has_value());
  auto tok = tokenizer::tokenizer_from_vocab(*ckpt_vocab);
  for (const auto& s : ref["samples"]) {
    EXPECT_EQ(tok->encode(s["prompt"].get<std::string>(), true),
              s["prompt_ids"].get<std::vector<int32_t>>());
    EXPECT_EQ(tok->decode(s["greedy_ids"].get<std::vector<int32_t>>(), true),
              s["completion"].get<std::string>());
  }
}

TEST(SmolLM2, ChatAnswerThroughTheEngineReadsAsEnglish) {
  MACSERVE_REQUIRE_PATH(gguf_path());
  engine::EngineConfig cfg;
  cfg.model_path = gguf_path();
  cfg.max_model_len = 1024;
  auto eng = engine::Engine::create(cfg);
  const std::string prompt =
      "<|im_start|>user\nWhat is the capital of France? Answer in one "
      "sentence.<|im_end|>\n<|im_start|>assistant\n";
  sampling::SamplingParams p;
  p.temperature = 0.0f;
  p.max_tokens = 40;
  auto stream = eng->submit({"chat", eng->tokenizer().encode(prompt, true), p});
  std::string text;
  engine::RequestOutput out;
  engine::FinishReason reason = engine::FinishReason::kNone;
  while (stream->next(out)) {
    text += out.text;
    if (out.finished) reason = out.finish_reason;
  }
  EXPECT_EQ(reason, engine::FinishReason::kStop)
      << text;  // ends with <|im_end|>, not the length cap
  EXPECT_NE(text.find("Paris"), std::string::npos) << text;
  int letters = 0;
  for (unsigned char c : text) letters += std::isalpha(c) || c == ' ' || c == '.' || c == ',';
  EXPECT_GT(letters, static_cast<int>(text.size() * 9 / 10)) << text;
}

}  // namespace
}  // namespace macserve::testing
