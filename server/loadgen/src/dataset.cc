// Dataset dispatch and the synthetic datasets (random, prefix-repetition).
#include "macserve/loadgen/dataset.h"

#include <algorithm>
#include <random>

#include "macserve/core/error.h"
#include "text_fit.h"

namespace macserve::loadgen {

int64_t count_prompt_tokens(const tokenizer::Tokenizer& tok, const std::string& text) {
  return static_cast<int64_t>(tok.encode(text, true).size());
}

namespace {

void require_positive(int64_t v, const char* flag) {
  if (v < 1) throw_error(ErrorCode::kInvalidArgument, "{} must be >= 1, got {}", flag, v);
}

int64_t num_special(const tokenizer::Tokenizer& tok) { return count_prompt_tokens(tok, ""); }

// A prompt of exactly `target` tokens (specials included): `prefix` then random vocabulary words.
SampleRequest random_prompt(const tokenizer::Tokenizer& tok, const std::vector<int32_t>& pool,
                            const std::string& prefix, int64_t prefix_tokens, int64_t target,
                            int64_t output_len, std::mt19937_64& rng) {
  const std::vector<int32_t> ids = detail::draw_ids(pool, target + 32, rng);
  const int64_t n0 = target - prefix_tokens - num_special(tok);
  SampleRequest s;
  s.prompt = detail::fit_to_length(
      tok, target, n0, [&](int64_t n) { return prefix + detail::decode_prefix(tok, ids, n); });
  s.prompt_len = count_prompt_tokens(tok, s.prompt);
  s.output_len = output_len;
  return s;
}

// Text of exactly `n` tokens without special tokens (a shared prefix).
std::string random_text(const tokenizer::Tokenizer& tok, const std::vector<int32_t>& pool,
                        int64_t n, std::mt19937_64& rng) {
  if (n <= 0) return {};
  const std::vector<int32_t> ids = detail::draw_ids(pool, n + 32, rng);
  return detail::fit_to_length(
      tok, n, n, [&](int64_t k) { return detail::decode_prefix(tok, ids, k); }, false);
}

}  // namespace

std::vector<SampleRequest> random_dataset(const DatasetOptions& opt,
                                          const tokenizer::Tokenizer& tok) {
  require_positive(opt.num_prompts, "--num-prompts");
  require_positive(opt.random_input_len, "--random-input-len");
  require_positive(opt.random_output_len, "--random-output-len");
  if (opt.random_prefix_len < 0)
    throw_error(ErrorCode::kInvalidArgument, "--random-prefix-len must be >= 0");
  if (!(opt.random_range_ratio >= 0 && opt.random_range_ratio < 1))
    throw_error(ErrorCode::kInvalidArgument, "--random-range-ratio must be in [0, 1), got {}",
                opt.random_range_ratio);
  std::mt19937_64 rng(opt.seed);
  const std::vector<int32_t> pool = detail::word_pool(tok);
  const std::string prefix = random_text(tok, pool, opt.random_prefix_len, rng);
  std::vector<SampleRequest> out;
  out.reserve(static_cast<std::size_t>(opt.num_prompts));
  for (int64_t i = 0; i < opt.num_prompts; ++i) {
    const int64_t in = detail::draw_len(opt.random_input_len, opt.random_range_ratio, 1, rng);
    const int64_t outlen = detail::draw_len(opt.random_output_len, opt.random_range_ratio, 1, rng);
    const int64_t target = std::max(opt.random_prefix_len + in, num_special(tok) + 1);
    out.push_back(random_prompt(tok, pool, prefix, opt.random_prefix_len, target, outlen, rng));
  }
  return out;
}

std::vector<SampleRequest> prefix_repetition_dataset(const DatasetOptions& opt,
                                                     const tokenizer::Tokenizer& tok) {
  require_positive(opt.num_prompts, "--num-prompts");
  require_positive(opt.prefix_repetition_num_prefixes, "--prefix-repetition-num-prefixes");
  require_positive(opt.prefix_repetition_suffix_len, "--prefix-repetition-suffix-len");
  require_positive(opt.prefix_repetition_output_len, "--prefix-repetition-output-len");
  if (opt.prefix_repetition_prefix_len < 0)
    throw_error(ErrorCode::kInvalidArgument, "--prefix-repetition-prefix-len must be >= 0");
  std::mt19937_64 rng(opt.seed);
  const std::vector<int32_t> pool = detail::word_pool(tok);
  std::vector<std::string> prefixes;
  for (int64_t p = 0; p < opt.prefix_repetition_num_prefixes; ++p)
    prefixes.push_back(random_text(tok, pool, opt.prefix_repetition_prefix_len, rng));
  std::vector<SampleRequest> out;
  const int64_t target = opt.prefix_repetition_prefix_len + opt.prefix_repetition_suffix_len;
  for (int64_t i = 0; i < opt.num_prompts; ++i) {
    const std::string& prefix =
        prefixes[static_cast<std::size_t>(i % opt.prefix_repetition_num_prefixes)];
    out.push_back(random_prompt(tok, pool, prefix, opt.prefix_repetition_prefix_len, target,
                                opt.prefix_repetition_output_len, rng));
  }
  std::shuffle(out.begin(), out.end(), rng);
  return out;
}

std::vector<SampleRequest> load_dataset(const DatasetOptions& opt,
                                        const tokenizer::Tokenizer& tok) {
  if (opt.name == "random") return random_dataset(opt, tok);
  if (opt.name == "sharegpt") return sharegpt_dataset(opt, tok);
  if (opt.name == "custom") return custom_dataset(opt, tok);
  if (opt.name == "prefix-repetition" || opt.name == "prefix_repetition")
    return prefix_repetition_dataset(opt, tok);
  if (opt.name == "long-context" || opt.name == "long_context")
    return long_context_dataset(opt, tok);
  throw_error(ErrorCode::kInvalidArgument,
              "--dataset-name: unknown dataset '{}' (random, sharegpt, custom, prefix-repetition, "
              "long-context)",
              opt.name);
}

}  // namespace macserve::loadgen
