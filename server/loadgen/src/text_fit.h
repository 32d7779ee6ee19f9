// Building prompt text to an exact token count: draw vocabulary words, decode, re-encode, and move
// the number of words until the server-side count (special tokens included) equals the target.
#pragma once

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "macserve/tokenizer/tokenizer.h"

namespace macserve::loadgen::detail {

// Ids that decode to " word" (a leading space, then ASCII letters): random sequences of them
// decode to text that re-encodes to the same ids almost always. Falls back to every non-special
// id with printable ASCII bytes when the vocabulary has few such words.
std::vector<int32_t> word_pool(const tokenizer::Tokenizer& tok);

// Smallest-error n for which count(build(n)) == target, searched from `n0` by steps of the
// remaining difference. Returns the text (exact when any n reaches the target; otherwise the
// closest count at or below it).
std::string fit_to_length(const tokenizer::Tokenizer& tok, int64_t target, int64_t n0,
                          const std::function<std::string(int64_t)>& build,
                          bool add_special = true);

// `n` random ids of the pool, decoded.
std::vector<int32_t> draw_ids(const std::vector<int32_t>& pool, int64_t n, std::mt19937_64& rng);
std::string decode_prefix(const tokenizer::Tokenizer& tok, const std::vector<int32_t>& ids,
                          int64_t n);

// Uniform integer in [floor(x * (1 - r)), ceil(x * (1 + r))], at least `min`.
int64_t draw_len(int64_t x, double r, int64_t min, std::mt19937_64& rng);

}  // namespace macserve::loadgen::detail
