// The embedded default model, SmolLM2-135M-Instruct (Q4_1 GGUF): parity with transformers on the
// same dequantised weights (scripts/gen_smollm2_reference.py), its GGUF tokenizer, and a chat
// answer through the engine that reads as English.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include <nlohmann/json.hpp>

#include "macserve/engine/engine.h"
#include "macserve/tokenizer/tokenizer.h"
#include "models/model_harness.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

nlohmann::json reference() {
  std::ifstream f(fixtures_dir() + "/smollm2/reference.json");
  return nlohmann::json::parse(f);
}

// Logits are O(10-30); float32 sums in another order differ by ~1e-4 relative.
constexpr double kLogitTol = 3e-3;
// Native (8-bit activations) vs f32 logits: bounds at about twice the measured worst (see
// NativeQuantizedWeightsStayCloseToTheF32Path).
constexpr double kNativeMaxAbs = 1.5;
constexpr double kNativeRelL2 = 0.02;
constexpr int kNativeGreedyMisses = 1;  // per prompt, of 7-30 completion tokens (measured: 0)

TEST(SmolLM2, GreedyAndLogitsMatchTransformers) {
  MACSERVE_REQUIRE_PATH(default_model_path());
  const auto ref = reference();
  ModelHarness h(default_model_path(), 512);
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
// file. Both see the same weight values, but the native kernels quantize each activation row to 8
// bits (a scale per 4 elements) before the integer dot products (kernels/cpu/quant_dot.h), so the
// logits differ by that rounding. Measured over the reference's three prompts and their greedy
// completions (every position, every vocabulary entry): max |diff| 0.39-0.74 on logits of
// magnitude 10-30, relative L2 0.0073-0.0105 per prompt; teacher-forced greedy (the native argmax
// at each completion position) 63 of 63 tokens as the reference. With one scale per 32 elements
// (llama.cpp's Q8 activations) it was 1.4-1.8 and 0.025-0.028, with one near-tie flipped
// (completion token 5 of "The capital of France is") and "What is the capital of France?" answered
// in bad French instead of "The capital of France is Paris." (tests/server/test_openai_sdk.py);
// hence the groups of 4. Free-running native greedy can still leave the f32/transformers goldens at
// a near-tie; those goldens (GreedyAndLogitsMatchTransformers) stay on the f32 path, which is
// unchanged.
TEST(SmolLM2, NativeQuantizedWeightsStayCloseToTheF32Path) {
  MACSERVE_REQUIRE_PATH(default_model_path());
  const auto ref = reference();
  ModelHarness f32(default_model_path(), 512),
      native(default_model_path(), 512, 16, 7, /*keep_quantized=*/true);
  // Weights in memory: the file's blocks (98 MB file) instead of 513 MiB of float32.
  EXPECT_LT(native.weight_bytes(), f32.weight_bytes() / 4);
  for (const auto& s : ref["samples"]) {
    auto ids = s["prompt_ids"].get<std::vector<int32_t>>();
    const std::size_t prompt_len = ids.size();
    const auto greedy = s["greedy_ids"].get<std::vector<int32_t>>();
    ids.insert(ids.end(), greedy.begin(), greedy.end() - 1);
    const auto a = f32.prefill(ids), b = native.prefill(ids);
    ASSERT_EQ(a.size(), b.size());
    double worst = 0, diff2 = 0, ref2 = 0;
    for (std::size_t r = 0; r < a.size(); ++r)
      for (std::size_t v = 0; v < a[r].size(); ++v) {
        const double d = static_cast<double>(a[r][v]) - b[r][v];
        worst = std::max(worst, std::abs(d));
        diff2 += d * d;
        ref2 += static_cast<double>(a[r][v]) * a[r][v];
      }
    const double rel_l2 = std::sqrt(diff2 / ref2);
    std::printf("native vs f32: max |diff| %.4f, rel L2 %.3g over %zu positions\n", worst, rel_l2,
                a.size());
    EXPECT_GT(worst, 0.0) << "the native path quantizes activations: some difference";
    EXPECT_LT(worst, kNativeMaxAbs) << "prompt: " << s["prompt"];
    EXPECT_LT(rel_l2, kNativeRelL2) << "prompt: " << s["prompt"];
    // Teacher-forced greedy: the native argmax at each completion position.
    int agree = 0;
    for (std::size_t i = 0; i < greedy.size(); ++i) {
      const auto& row = b[prompt_len - 1 + i];
      const auto top = std::max_element(row.begin(), row.end()) - row.begin();
      agree += top == greedy[i];
      if (top != greedy[i]) {  // how close a call it was, on both paths
        const auto& fr = a[prompt_len - 1 + i];
        std::printf(
            "  completion token %zu: native picks %ld (f32 logit %.3f, native %.3f) over %d "
            "(f32 %.3f, native %.3f)\n",
            i, static_cast<long>(top), fr[top], row[top], greedy[i], fr[greedy[i]], row[greedy[i]]);
      }
    }
    std::printf("native greedy: %d of %zu completion tokens as the reference\n", agree,
                greedy.size());
    EXPECT_GE(agree, static_cast<int>(greedy.size()) - kNativeGreedyMisses) << s["prompt"];
  }
}

TEST(SmolLM2, GgufTokenizerMatchesTransformers) {
  MACSERVE_REQUIRE_PATH(default_model_path());
  const auto ref = reference();
  const auto ckpt_vocab = models::load_checkpoint(default_model_path()).gguf_vocab;
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
  MACSERVE_REQUIRE_PATH(default_model_path());
  engine::EngineConfig cfg;
  cfg.model_path = default_model_path();
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
