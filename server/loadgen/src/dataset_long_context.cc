// long-context: needle in a haystack. A sentence with a key and a seven-digit number is hidden at a
// depth of a long text; the prompt ends with the question, and the reply is checked for the number.
#include <algorithm>
#include <cctype>
#include <fstream>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "macserve/core/error.h"
#include "macserve/loadgen/dataset.h"
#include "text_fit.h"

namespace macserve::loadgen {
namespace {

constexpr std::size_t kMaxHaystackChars = 4u << 20;

// Filler prose for runs without a text file: sentences drawn from small phrase lists (public
// texts read better, and --dataset-path takes any UTF-8 file).
std::string generated_filler(std::size_t chars, std::mt19937_64& rng) {
  static const char* const kSubjects[] = {
      "The miller",       "An old sailor", "The village clerk", "A tired traveller",
      "The schoolmaster", "Her brother",   "The shepherd",      "A merchant from the coast"};
  static const char* const kVerbs[] = {"walked slowly towards",     "spoke at length about",
                                       "looked for a long time at", "wrote a letter concerning",
                                       "forgot everything about",   "returned in the evening to"};
  static const char* const kObjects[] = {
      "the grey bridge",   "the harvest",         "the northern road", "an empty house",
      "the market square", "the river in winter", "a ledger of debts", "the chapel bell"};
  static const char* const kTails[] = {"before the rain came.",   "as the lamps were lit.",
                                       "while the others slept.", "and said nothing more.",
                                       "without knowing why.",    "as he had done for years."};
  auto pick = [&](const auto& arr) {
    return arr[std::uniform_int_distribution<std::size_t>(0, std::size(arr) - 1)(rng)];
  };
  std::string out;
  while (out.size() < chars) {
    out += pick(kSubjects);
    out += ' ';
    out += pick(kVerbs);
    out += ' ';
    out += pick(kObjects);
    out += ' ';
    out += pick(kTails);
    out += ' ';
  }
  return out;
}

std::string read_haystack(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw_error(ErrorCode::kNotFound, "--dataset-path {}: cannot open the haystack text", path);
  std::string text(kMaxHaystackChars, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  // One space for every run of whitespace: line breaks of the source carry no meaning here.
  std::string out;
  out.reserve(text.size());
  bool space = false;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  if (out.size() < 1000)
    throw_error(ErrorCode::kInvalidArgument, "--dataset-path {}: the haystack text is too short",
                path);
  return out;
}

}  // namespace

bool reply_has_answer(const std::string& reply, const std::string& answer) {
  if (answer.empty()) return false;
  // The number may come back with its digits spaced by the tokenizer's decoding: compare digits
  // only.
  std::string packed;
  for (char c : reply)
    if (std::isdigit(static_cast<unsigned char>(c))) packed.push_back(c);
  return reply.find(answer) != std::string::npos || packed.find(answer) != std::string::npos;
}

std::vector<SampleRequest> long_context_dataset(const DatasetOptions& opt,
                                                const tokenizer::Tokenizer& tok) {
  if (opt.num_prompts < 1) throw_error(ErrorCode::kInvalidArgument, "--num-prompts must be >= 1");
  if (opt.long_context_input_len < 64)
    throw_error(ErrorCode::kInvalidArgument, "--long-context-input-len must be >= 64, got {}",
                opt.long_context_input_len);
  if (opt.long_context_output_len < 1)
    throw_error(ErrorCode::kInvalidArgument, "--long-context-output-len must be >= 1");
  if (opt.long_context_depth > 1)
    throw_error(ErrorCode::kInvalidArgument, "--long-context-depth must be in [0, 1]");
  std::mt19937_64 rng(opt.seed);
  const std::size_t want_chars = std::min<std::size_t>(
      kMaxHaystackChars, static_cast<std::size_t>(opt.long_context_input_len) * 12 + 4096);
  std::string text = opt.path.empty() ? generated_filler(want_chars, rng) : read_haystack(opt.path);
  while (text.size() < want_chars) text += " " + text;  // repeat a short file
  const std::vector<int32_t> hay = tok.encode(text, false);
  static const char* const kKeys[] = {"amber heron",      "silent quarry", "copper lantern",
                                      "northern orchard", "velvet anchor", "hollow meadow",
                                      "crimson ledger",   "patient falcon"};
  std::vector<SampleRequest> out;
  for (int64_t i = 0; i < opt.num_prompts; ++i) {
    const std::string key =
        kKeys[std::uniform_int_distribution<std::size_t>(0, std::size(kKeys) - 1)(rng)];
    const std::string value =
        std::to_string(std::uniform_int_distribution<int64_t>(1000000, 9999999)(rng));
    const double depth = opt.long_context_depth >= 0
                             ? opt.long_context_depth
                             : std::uniform_real_distribution<double>(0.05, 0.95)(rng);
    const std::string needle = fmt::format(" The special magic number for {} is {}. ", key, value);
    const std::string question = fmt::format(
        "\n\nQuestion: What is the special magic number for {} mentioned in the text above?\n"
        "Answer: The special magic number for {} is",
        key, key);
    const int64_t room = static_cast<int64_t>(hay.size()) - opt.long_context_input_len - 1;
    const int64_t start = room > 0 ? std::uniform_int_distribution<int64_t>(0, room)(rng) : 0;
    auto slice = [&](int64_t from, int64_t to) {
      from = std::clamp<int64_t>(from, 0, static_cast<int64_t>(hay.size()));
      to = std::clamp<int64_t>(to, from, static_cast<int64_t>(hay.size()));
      return tok.decode(std::vector<int32_t>(hay.begin() + from, hay.begin() + to), true);
    };
    auto build = [&](int64_t n) {
      const auto at = static_cast<int64_t>(static_cast<double>(n) * depth);
      std::string prompt = slice(start, start + at);
      prompt += needle;
      prompt += slice(start + at, start + n);
      prompt += question;
      return prompt;
    };
    const int64_t overhead = count_prompt_tokens(tok, needle + question);
    SampleRequest s;
    s.prompt = detail::fit_to_length(tok, opt.long_context_input_len,
                                     opt.long_context_input_len - overhead, build);
    s.prompt_len = count_prompt_tokens(tok, s.prompt);
    s.output_len = opt.long_context_output_len;
    s.answer = value;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace macserve::loadgen
