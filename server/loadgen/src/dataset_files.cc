// Datasets read from files: ShareGPT-format JSON and JSONL prompt files.
#include <algorithm>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>

#include "macserve/core/error.h"
#include "macserve/loadgen/dataset.h"

namespace macserve::loadgen {
namespace {

std::string read_file(const std::string& path, const char* dataset) {
  if (path.empty())
    throw_error(ErrorCode::kInvalidArgument, "--dataset-name {} needs --dataset-path FILE",
                dataset);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw_error(ErrorCode::kNotFound, "--dataset-path {}: cannot open the file", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int64_t line_of(const std::string& text, std::size_t byte) {
  byte = std::min(byte, text.size());
  return 1 + std::count(text.begin(), text.begin() + static_cast<std::ptrdiff_t>(byte), '\n');
}

// Fills up to num_prompts by drawing repeats when the file has fewer usable entries (vLLM's
// oversampling), so --num-prompts is always honoured.
std::vector<SampleRequest> take(std::vector<SampleRequest> pool, int64_t n, std::mt19937_64& rng,
                                const std::string& path) {
  if (pool.empty())
    throw_error(ErrorCode::kInvalidArgument, "{}: no usable prompts in the file", path);
  if (static_cast<int64_t>(pool.size()) >= n) {
    pool.resize(static_cast<std::size_t>(n));
    return pool;
  }
  std::uniform_int_distribution<std::size_t> pick(0, pool.size() - 1);
  const std::size_t have = pool.size();
  while (static_cast<int64_t>(pool.size()) < n) pool.push_back(pool[pick(rng) % have]);
  return pool;
}

}  // namespace

std::vector<SampleRequest> sharegpt_dataset(const DatasetOptions& opt,
                                            const tokenizer::Tokenizer& tok) {
  const std::string text = read_file(opt.path, "sharegpt");
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw_error(ErrorCode::kInvalidArgument, "{}:{}: not valid JSON ({})", opt.path,
                line_of(text, e.byte), e.what());
  }
  if (!doc.is_array())
    throw_error(ErrorCode::kInvalidArgument, "{}: a ShareGPT file is a JSON array of conversations",
                opt.path);
  // (prompt, reply) of the entries with at least two turns, shuffled by the seed (vLLM).
  std::vector<std::pair<std::string, std::string>> convs;
  for (std::size_t i = 0; i < doc.size(); ++i) {
    const auto& e = doc[i];
    const auto c = e.is_object() ? e.find("conversations") : e.end();
    if (!e.is_object() || c == e.end() || !c->is_array())
      throw_error(ErrorCode::kInvalidArgument, "{}: entry {} has no \"conversations\" list",
                  opt.path, i);
    if (c->size() < 2) continue;
    for (std::size_t t = 0; t < 2; ++t) {
      const auto& turn = (*c)[t];
      if (!turn.is_object() || !turn.contains("value") || !turn["value"].is_string())
        throw_error(ErrorCode::kInvalidArgument, "{}: entry {} turn {} has no \"value\" string",
                    opt.path, i, t);
    }
    convs.emplace_back((*c)[0]["value"].get<std::string>(), (*c)[1]["value"].get<std::string>());
  }
  std::mt19937_64 rng(opt.seed);
  std::shuffle(convs.begin(), convs.end(), rng);
  std::vector<SampleRequest> pool;
  for (const auto& [prompt, reply] : convs) {
    if (static_cast<int64_t>(pool.size()) >= opt.num_prompts) break;
    SampleRequest s;
    s.prompt = prompt;
    s.prompt_len = count_prompt_tokens(tok, prompt);
    s.output_len = opt.sharegpt_output_len > 0
                       ? opt.sharegpt_output_len
                       : static_cast<int64_t>(tok.encode(reply, false).size());
    // vLLM's filter: drop very short pairs and those longer than 1024 / 2048 tokens in all.
    if (s.prompt_len < 4 || (opt.sharegpt_output_len <= 0 && s.output_len < 4)) continue;
    if (s.prompt_len > 1024 || s.prompt_len + s.output_len > 2048) continue;
    pool.push_back(std::move(s));
  }
  return take(std::move(pool), opt.num_prompts, rng, opt.path);
}

std::vector<SampleRequest> custom_dataset(const DatasetOptions& opt,
                                          const tokenizer::Tokenizer& tok) {
  if (opt.custom_output_len < 1)
    throw_error(ErrorCode::kInvalidArgument, "--custom-output-len must be >= 1");
  const std::string text = read_file(opt.path, "custom");
  std::vector<SampleRequest> pool;
  std::istringstream in(text);
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw_error(ErrorCode::kInvalidArgument, "{}:{}: not valid JSON ({})", opt.path, lineno,
                  e.what());
    }
    std::string prompt;
    if (j.is_object() && j.contains("prompt") && j["prompt"].is_string()) {
      prompt = j["prompt"].get<std::string>();
    } else if (j.is_object() && j.contains("turns") && j["turns"].is_array() &&
               !j["turns"].empty() && j["turns"][0].is_string()) {
      prompt = j["turns"][0].get<std::string>();  // MT-Bench / Vicuna question files
    } else {
      throw_error(ErrorCode::kInvalidArgument, "{}:{}: expected an object with a \"prompt\" string",
                  opt.path, lineno);
    }
    SampleRequest s;
    s.prompt = std::move(prompt);
    s.prompt_len = count_prompt_tokens(tok, s.prompt);
    s.output_len = opt.custom_output_len;
    pool.push_back(std::move(s));
  }
  std::mt19937_64 rng(opt.seed);
  std::shuffle(pool.begin(), pool.end(), rng);
  return take(std::move(pool), opt.num_prompts, rng, opt.path);
}

}  // namespace macserve::loadgen
