// Benchmark datasets with `vllm bench serve`'s names and flags. Every prompt's length is counted
// with the served model's tokenizer, as the server will count it (special tokens included), and
// the synthetic ones are built to an exact token count.
//   random             random words of the vocabulary; --random-input-len/-output-len/-range-ratio/
//                      -prefix-len (a prefix shared by every prompt, counted on top of the input)
//   sharegpt           ShareGPT-format JSON (--dataset-path): first human turn as the prompt, the
//                      first reply's length as the output length (or --sharegpt-output-len)
//   custom             JSONL (--dataset-path), one object per line with a "prompt" string (or a
//                      "turns" list, MT-Bench style, whose first turn is used); --custom-output-len
//   prefix-repetition  --prefix-repetition-num-prefixes shared prefixes, each with random suffixes
//   long-context       needle in a haystack: a fact hidden at a random depth of a long text
//                      (--dataset-path: a UTF-8 text file; without one a generated filler), the
//                      question at the end; replies are checked for the answer
// Files that do not parse give Error(kInvalidArgument) naming the file and the line.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "macserve/tokenizer/tokenizer.h"

namespace macserve::loadgen {

struct SampleRequest {
  std::string prompt;      // completion prompt, or the user message for chat
  int64_t prompt_len = 0;  // tokens of `prompt` with the tokenizer's special tokens
  int64_t output_len = 0;  // max tokens to ask for
  std::string answer;      // long-context: what the reply must contain; empty otherwise
};

struct DatasetOptions {
  std::string name = "random";
  std::string path;
  int64_t num_prompts = 1000;
  uint64_t seed = 0;
  int64_t random_input_len = 1024;
  int64_t random_output_len = 128;
  double random_range_ratio = 0.0;
  int64_t random_prefix_len = 0;
  int64_t sharegpt_output_len = -1;  // -1: the reference reply's length
  int64_t custom_output_len = 256;
  int64_t prefix_repetition_prefix_len = 256;
  int64_t prefix_repetition_suffix_len = 256;
  int64_t prefix_repetition_num_prefixes = 10;
  int64_t prefix_repetition_output_len = 128;
  int64_t long_context_input_len = 4096;
  int64_t long_context_output_len = 24;
  double long_context_depth = -1;  // needle position in [0, 1]; -1: uniform random per prompt
};

std::vector<SampleRequest> load_dataset(const DatasetOptions& opt, const tokenizer::Tokenizer& tok);

// ---- the parts, exposed for tests -------------------------------------------------------------
std::vector<SampleRequest> random_dataset(const DatasetOptions& opt,
                                          const tokenizer::Tokenizer& tok);
std::vector<SampleRequest> prefix_repetition_dataset(const DatasetOptions& opt,
                                                     const tokenizer::Tokenizer& tok);
std::vector<SampleRequest> sharegpt_dataset(const DatasetOptions& opt,
                                            const tokenizer::Tokenizer& tok);
std::vector<SampleRequest> custom_dataset(const DatasetOptions& opt,
                                          const tokenizer::Tokenizer& tok);
std::vector<SampleRequest> long_context_dataset(const DatasetOptions& opt,
                                                const tokenizer::Tokenizer& tok);

// Whether a long-context reply answers the question (the answer's digits appear in it).
bool reply_has_answer(const std::string& reply, const std::string& answer);

// Tokens of `text` as the server counts a prompt (special tokens added).
int64_t count_prompt_tokens(const tokenizer::Tokenizer& tok, const std::string& text);

}  // namespace macserve::loadgen

namespace macserve::loadgen {

// The served model's tokenizer from a model directory, a tokenizer.json / tokenizer.model file, or
// a .gguf file's embedded vocabulary. Throws Error naming the path.
std::unique_ptr<tokenizer::Tokenizer> load_bench_tokenizer(const std::string& path);

}  // namespace macserve::loadgen
