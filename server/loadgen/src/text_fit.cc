#include "text_fit.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "macserve/core/error.h"

namespace macserve::loadgen::detail {

std::vector<int32_t> word_pool(const tokenizer::Tokenizer& tok) {
  std::vector<int32_t> words, printable;
  for (int64_t i = 0; i < tok.vocab_size(); ++i) {
    const auto id = static_cast<int32_t>(i);
    if (tok.is_special(id)) continue;
    const std::string b = tok.token_bytes(id);
    if (b.empty()) continue;
    const bool ascii =
        std::all_of(b.begin(), b.end(), [](char c) { return c >= 0x20 && c < 0x7f; });
    if (!ascii) continue;
    printable.push_back(id);
    if (b.size() >= 3 && b[0] == ' ' && std::all_of(b.begin() + 1, b.end(), [](char c) {
          return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        }))
      words.push_back(id);
  }
  if (words.size() >= 64) return words;
  if (printable.empty())
    throw_error(ErrorCode::kInvalidArgument,
                "the tokenizer has no printable tokens to build prompts from");
  return printable;
}

std::vector<int32_t> draw_ids(const std::vector<int32_t>& pool, int64_t n, std::mt19937_64& rng) {
  std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
  std::vector<int32_t> ids(static_cast<std::size_t>(std::max<int64_t>(n, 0)));
  for (int32_t& id : ids) id = pool[pick(rng)];
  return ids;
}

std::string decode_prefix(const tokenizer::Tokenizer& tok, const std::vector<int32_t>& ids,
                          int64_t n) {
  n = std::clamp<int64_t>(n, 0, static_cast<int64_t>(ids.size()));
  return tok.decode(std::vector<int32_t>(ids.begin(), ids.begin() + n), true);
}

std::string fit_to_length(const tokenizer::Tokenizer& tok, int64_t target, int64_t n0,
                          const std::function<std::string(int64_t)>& build, bool add_special) {
  auto count = [&](const std::string& text) {
    return static_cast<int64_t>(tok.encode(text, add_special).size());
  };
  std::set<int64_t> seen;
  std::string best;
  int64_t best_count = -1;
  int64_t n = std::max<int64_t>(n0, 0);
  auto consider = [&](int64_t k) {
    std::string text = build(k);
    const int64_t c = count(text);
    if (c <= target && c > best_count) {
      best_count = c;
      best = std::move(text);
    }
    return c;
  };
  for (int iter = 0; iter < 32; ++iter) {
    seen.insert(n);
    const int64_t c = consider(n);
    if (c == target) return best;
    int64_t next = std::max<int64_t>(0, n + (target - c));
    if (seen.count(next)) break;  // oscillating around the target: scan nearby below
    n = next;
  }
  for (int64_t k = n - 1; k >= std::max<int64_t>(0, n - 8) && best_count != target; --k)
    consider(k);
  if (best_count < 0)
    throw_error(ErrorCode::kInvalidArgument, "cannot build a prompt of {} tokens", target);
  return best;
}

int64_t draw_len(int64_t x, double r, int64_t min, std::mt19937_64& rng) {
  const auto lo = static_cast<int64_t>(std::floor(static_cast<double>(x) * (1.0 - r)));
  const auto hi = static_cast<int64_t>(std::ceil(static_cast<double>(x) * (1.0 + r)));
  if (hi <= lo) return std::max(x, min);
  std::uniform_int_distribution<int64_t> d(lo, hi);
  return std::max(d(rng), min);
}

}  // namespace macserve::loadgen::detail
