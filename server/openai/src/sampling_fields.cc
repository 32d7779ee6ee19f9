// The sampling fields of both endpoints (JSON) -> SamplingFields -> sampling::SamplingParams with
// the checks every front end shares (request_fields.h); OpenAI's ranges, vLLM's extension names.
#include <limits>

#include <fmt/format.h>

#include "mapping.h"

namespace macserve::openai::detail {
namespace {

std::vector<std::string> parse_stop(const json& body) {
  const auto it = body.find("stop");
  if (it == body.end() || it->is_null()) return {};
  std::vector<std::string> stop;
  if (it->is_string()) {
    stop.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    if (it->size() > kMaxStopStrings)
      fail(fmt::format("Invalid 'stop': array too long. Expected an array with maximum length {}, "
                       "but got an array "
                       "with length {} instead.",
                       kMaxStopStrings, it->size()),
           "stop");
    for (const json& s : *it) {
      if (!s.is_string())
        fail("Invalid type for 'stop': expected a string or an array of strings.", "stop");
      stop.push_back(s.get<std::string>());
    }
  } else {
    fail("Invalid type for 'stop': expected a string or an array of strings.", "stop");
  }
  return stop;
}

std::vector<Given<int64_t>> parse_stop_token_ids(const json& body) {
  const auto it = body.find("stop_token_ids");
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_array())
    fail("Invalid type for 'stop_token_ids': expected an array of token ids.", "stop_token_ids");
  std::vector<Given<int64_t>> ids;
  for (const json& v : *it) ids.push_back(as_given_int(v, "stop_token_ids"));
  return ids;
}

// {"50256": -100, ...}: keys are token ids written as decimal strings.
std::vector<std::pair<Given<int64_t>, Given<double>>> parse_logit_bias(const json& body) {
  const auto it = body.find("logit_bias");
  if (it == body.end() || it->is_null()) return {};
  if (!it->is_object())
    fail("Invalid type for 'logit_bias': expected an object mapping token ids to numbers.",
         "logit_bias");
  std::vector<std::pair<Given<int64_t>, Given<double>>> bias;
  for (const auto& [key, value] : it->items()) {
    bool digits = !key.empty() && key.size() <= 10;
    for (const char c : key) digits = digits && c >= '0' && c <= '9';
    if (!digits)
      fail(fmt::format("Invalid key '{}' in 'logit_bias': keys must be token ids.",
                       sanitize_utf8(key)),
           "logit_bias");
    if (!value.is_number())
      fail(fmt::format("Invalid type for 'logit_bias[\"{}\"]': expected a number.", key),
           "logit_bias");
    bias.emplace_back(Given<int64_t>{std::stoll(key), key},
                      Given<double>{value.get<double>(), value.dump()});
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
  SamplingFields f;
  f.temperature = get_given_number(body, "temperature");
  f.top_p = get_given_number(body, "top_p");
  f.top_k = get_given_int(body, "top_k");
  f.min_p = get_given_number(body, "min_p");
  f.repetition_penalty = get_given_number(body, "repetition_penalty");
  f.presence_penalty = get_given_number(body, "presence_penalty");
  f.frequency_penalty = get_given_number(body, "frequency_penalty");
  f.logit_bias = parse_logit_bias(body);
  f.seed = parse_seed(body);
  f.min_tokens = get_given_int(body, "min_tokens");
  f.stop = parse_stop(body);
  f.stop_token_ids = parse_stop_token_ids(body);
  f.ignore_eos = get_bool(body, "ignore_eos");
  f.skip_special_tokens = get_bool(body, "skip_special_tokens");
  get_string(body, "user");  // accepted (type-checked) and ignored
  return build_sampling(f, model);
}

}  // namespace macserve::openai::detail
