// The sampling fields of both endpoints -> sampling::SamplingParams (OpenAI's ranges; vLLM's
// extension names).
#include <limits>

#include <fmt/format.h>

#include "mapping.h"

namespace macserve::openai::detail {
namespace {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();
constexpr std::size_t kMaxStopStrings = 16;

std::vector<std::string> parse_stop(const json& body) {
  const auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return {};
  std::vector<std::string> stop;
  if (it->is_string()) {
    stop.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    if (it->size() > kMaxStopStrings)
      fail(fmt::format("Invalid 'stop': array too long. Expected an array with maximum length {}, but got an array "
                       "with length {} instead.", kMaxStopStrings, it->size()), "stop");
    for (const json& s : *it) {
      if (!s.is_string()) fail("Invalid type for 'stop': expected a string or an array of strings.", "stop");
      stop.push_back(s.get<std::string>());
    }
  } else {
    fail("Invalid type for 'stop': expected a string or an array of strings.", "stop");
  }
  for (const auto& s : stop)
    if (s.empty()) fail("Invalid 'stop': stop strings must not be empty.", "stop");
  return stop;
}

std::vector<int32_t> parse_stop_token_ids(const json& body, const ServedModel& model) {
  const auto it = body.find("stop_token_ids");
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_array()) fail("Invalid type for 'stop_token_ids': expected an array of token ids.", "stop_token_ids");
  std::vector<int32_t> ids;
  for (const json& v : *it) {
    const int64_t id = as_int(v, "stop_token_ids", 0, kInt32Max);
    check_token_id(id, model, "stop_token_ids");
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

// {"50256": -100, ...}: keys are token ids written as decimal strings.
std::vector<std::pair<int32_t, float>> parse_logit_bias(const json& body, const ServedModel& model) {
  const auto it = body.find("logit_bias");
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_object()) fail("Invalid type for 'logit_bias': expected an object mapping token ids to numbers.", "logit_bias");
  std::vector<std::pair<int32_t, float>> bias;
  for (const auto& [key, value] : it->items()) {
    bool digits = !key.empty() && key.size() <= 10;
    for (const char c : key) digits = digits && c >= '0' && c <= '9';
    if (!digits)
      fail(fmt::format("Invalid key '{}' in 'logit_bias': keys must be token ids.", sanitize_utf8(key)), "logit_bias");
    const int64_t id = std::stoll(key);
    check_token_id(id, model, "logit_bias");
    if (!value.is_number())
      fail(fmt::format("Invalid type for 'logit_bias[\"{}\"]': expected a number.", key), "logit_bias");
    const double b = value.get<double>();
    if (!(b >= -100.0 && b <= 100.0))
      fail(fmt::format("Invalid value for 'logit_bias[\"{}\"]': expected a number in [-100, 100], but got {}.", key,
                       value.dump()), "logit_bias");
    bias.emplace_back(static_cast<int32_t>(id), static_cast<float>(b));
  }
  return bias;
}

// Any 64-bit integer: negative seeds map to their two's-complement uint64 (so -1 and
// 18446744073709551615 are the same seed).
std::optional<uint64_t> parse_seed(const json& body) {
  const auto it = body.find("seed");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  return static_cast<uint64_t>(as_int(*it, "seed", std::numeric_limits<int64_t>::min(),
                                      std::numeric_limits<int64_t>::max()));
}

}  // namespace

sampling::SamplingParams parse_sampling(const json& body, const ServedModel& model) {
  sampling::SamplingParams p;
  p.temperature = static_cast<float>(get_number(body, "temperature", 0.0, 2.0).value_or(1.0));
  p.top_p = static_cast<float>(get_number(body, "top_p", 0.0, 1.0, /*lo_open=*/true).value_or(1.0));
  p.top_k = static_cast<int32_t>(get_int(body, "top_k", -1, kInt32Max).value_or(0));
  p.min_p = static_cast<float>(get_number(body, "min_p", 0.0, 1.0).value_or(0.0));
  p.repetition_penalty = static_cast<float>(get_number(body, "repetition_penalty", 0.0, 10.0, true).value_or(1.0));
  p.presence_penalty = static_cast<float>(get_number(body, "presence_penalty", -2.0, 2.0).value_or(0.0));
  p.frequency_penalty = static_cast<float>(get_number(body, "frequency_penalty", -2.0, 2.0).value_or(0.0));
  p.logit_bias = parse_logit_bias(body, model);
  p.seed = parse_seed(body);
  p.min_tokens = static_cast<int32_t>(get_int(body, "min_tokens", 0, kInt32Max).value_or(0));
  p.stop = parse_stop(body);
  p.stop_token_ids = parse_stop_token_ids(body, model);
  p.ignore_eos = get_bool(body, "ignore_eos").value_or(false);
  p.skip_special_tokens = get_bool(body, "skip_special_tokens").value_or(true);
  get_string(body, "user");  // accepted (type-checked) and ignored
  return p;
}

}  // namespace macserve::openai::detail
