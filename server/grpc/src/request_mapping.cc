#include "request_mapping.h"

#include <algorithm>
#include <limits>

#include <fmt/format.h>

#include "macserve/core/error.h"
#include "macserve/openai/request_fields.h"

namespace macserve::grpc_server {
namespace {

namespace v1 = macserve::v1;
using openai::Given;

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// gRPC numbers (grpc::StatusCode) without the gRPC headers.
enum Code : int {
  kInvalidArgument = 3,
  kNotFound = 5,
  kResourceExhausted = 8,
  kInternal = 13,
  kUnavailable = 14,
  kUnauthenticated = 16,
};

// A float as JSON shows it (3.0, not 3), so messages equal HTTP's for the same value.
std::string shown(float v) {
  std::string s = fmt::format("{}", v);
  if (s.find_first_of(".eni") == std::string::npos) s += ".0";
  return s;
}

std::optional<Given<double>> given(bool has, float v) {
  if (!has) return std::nullopt;
  return Given<double>{static_cast<double>(v), shown(v)};
}
std::optional<Given<int64_t>> given_int(bool has, int64_t v) {
  if (!has) return std::nullopt;
  return Given<int64_t>{v, std::to_string(v)};
}

openai::SamplingFields sampling_fields(const v1::SamplingParams& s) {
  openai::SamplingFields f;
  f.temperature = given(s.has_temperature(), s.temperature());
  f.top_p = given(s.has_top_p(), s.top_p());
  f.top_k = given_int(s.has_top_k(), s.top_k());
  f.min_p = given(s.has_min_p(), s.min_p());
  f.repetition_penalty = given(s.has_repetition_penalty(), s.repetition_penalty());
  f.presence_penalty = given(s.has_presence_penalty(), s.presence_penalty());
  f.frequency_penalty = given(s.has_frequency_penalty(), s.frequency_penalty());
  // The map's order is unspecified; sort so that the first bad entry reported is the same each
  // time.
  std::vector<std::pair<int32_t, float>> bias(s.logit_bias().begin(), s.logit_bias().end());
  std::sort(bias.begin(), bias.end());
  for (const auto& [id, b] : bias)
    f.logit_bias.emplace_back(Given<int64_t>{id, std::to_string(id)}, Given<double>{b, shown(b)});
  if (s.has_seed()) f.seed = s.seed();
  f.min_tokens = given_int(s.has_min_tokens(), s.min_tokens());
  f.stop.assign(s.stop().begin(), s.stop().end());
  for (const int32_t id : s.stop_token_ids()) f.stop_token_ids.push_back({id, std::to_string(id)});
  if (s.has_ignore_eos()) f.ignore_eos = s.ignore_eos();
  if (s.has_skip_special_tokens()) f.skip_special_tokens = s.skip_special_tokens();
  return f;
}

openai::PromptIds chat_prompt(const v1::GenerateRequest& req, const openai::ServedModel& model) {
  const v1::ChatInput& chat = req.chat();
  if (chat.messages().empty())
    openai::fail("Invalid 'chat.messages': empty array. Expected at least one message.",
                 "chat.messages");
  std::vector<chat::ChatMessage> messages;
  for (int i = 0; i < chat.messages_size(); ++i) {
    const v1::ChatMessage& m = chat.messages(i);
    if (!openai::is_known_role(m.role()))
      openai::fail(
          fmt::format(
              "Invalid value '{}' for 'chat.messages[{}].role': supported values are 'system', "
              "'developer', 'user', 'assistant', 'tool' and 'function'.",
              m.role(), i),
          fmt::format("chat.messages[{}].role", i));
    chat::ChatMessage msg;
    msg.role = m.role();
    msg.content = m.content();
    if (!m.name().empty()) msg.extra["name"] = m.name();
    messages.push_back(std::move(msg));
  }
  return openai::render_chat_messages(
      messages, chat.has_add_generation_prompt() ? chat.add_generation_prompt() : true,
      req.has_add_special_tokens() && req.add_special_tokens(), nlohmann::ordered_json::object(),
      model);
}

std::vector<int32_t> prompt_ids(const v1::GenerateRequest& req, const openai::ServedModel& model,
                                const char** param) {
  *param = "prompt";
  switch (req.input_case()) {
    case v1::GenerateRequest::kText:
      return openai::text_prompt(req.text(), model,
                                 req.has_add_special_tokens() ? req.add_special_tokens() : true)
          .ids;
    case v1::GenerateRequest::kChat:
      *param = "messages";
      return chat_prompt(req, model).ids;
    case v1::GenerateRequest::kTokenIds: {
      std::vector<int32_t> ids(req.token_ids().ids().begin(), req.token_ids().ids().end());
      for (const int32_t id : ids) openai::check_token_id(id, model, "token_ids");
      return ids;
    }
    case v1::GenerateRequest::INPUT_NOT_SET:
      break;
  }
  openai::fail("Missing input: set one of 'text', 'chat' or 'token_ids'.", "input");
}

MappedRequest map_or_throw(const v1::GenerateRequest& req, const openai::ServedModel& model) {
  MappedRequest out;
  const int64_t n =
      req.has_n() ? openai::check_int("n", {req.n(), std::to_string(req.n())}, 1, openai::kMaxN)
                  : 1;
  out.stream = req.has_stream() ? req.stream() : true;
  out.logprobs = req.return_logprobs();
  out.top_logprobs = static_cast<int32_t>(
      openai::check_int("top_logprobs", {req.top_logprobs(), std::to_string(req.top_logprobs())}, 0,
                        openai::kMaxTopLogprobs));
  if (out.top_logprobs > 0 && !out.logprobs)
    openai::fail(
        "Invalid 'top_logprobs': 'return_logprobs' must be true when 'top_logprobs' is set.",
        "top_logprobs");
  sampling::SamplingParams params = openai::build_sampling(sampling_fields(req.sampling()), model);
  params.logprobs = out.logprobs ? out.top_logprobs : -1;
  std::optional<int64_t> max_tokens;
  if (req.sampling().has_max_tokens())
    max_tokens = openai::check_max_tokens(
        {req.sampling().max_tokens(), std::to_string(req.sampling().max_tokens())}, "max_tokens",
        model);
  const char* param = "prompt";
  std::vector<int32_t> ids = prompt_ids(req, model, &param);
  if (ids.empty())
    openai::fail("The prompt is empty: it must contain at least one token.", "input");
  out.request = openai::make_request(std::move(ids), params, static_cast<int32_t>(n), max_tokens,
                                     param, model);
  return out;
}

v1::FinishReason finish_reason(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case engine::FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case engine::FinishReason::kAbort:
      return v1::FINISH_REASON_ABORT;
    case engine::FinishReason::kError:
    case engine::FinishReason::kNone:
      return v1::FINISH_REASON_UNSPECIFIED;
  }
  return v1::FINISH_REASON_UNSPECIFIED;
}

}  // namespace

std::variant<MappedRequest, openai::ApiError> map_request(const v1::GenerateRequest& req,
                                                          const openai::ServedModel& model) {
  try {
    return map_or_throw(req, model);
  } catch (const openai::ApiException& e) {
    return e.error;
  } catch (const Error& e) {
    if (e.code() == ErrorCode::kInvalidArgument) return openai::ApiError::invalid(e.what());
    return openai::ApiError::internal();
  }
}

int status_code_for(const openai::ApiError& e) {
  switch (e.status) {
    case 400:
      return kInvalidArgument;
    case 401:
      return kUnauthenticated;
    case 404:
      return kNotFound;
    case 429:
      return kResourceExhausted;
    case 503:
      return kUnavailable;
    default:
      return kInternal;
  }
}

OutputAssembler::OutputAssembler(const MappedRequest& mapped, std::string request_id)
    : stream_(mapped.stream),
      logprobs_(mapped.logprobs),
      top_logprobs_(mapped.top_logprobs),
      request_id_(std::move(request_id)) {
  if (!stream_) whole_.resize(static_cast<std::size_t>(std::max(mapped.request.n, 1)));
}

void OutputAssembler::append(const engine::RequestOutput& out, v1::Chunk* chunk) const {
  chunk->set_index(out.index);
  for (const engine::GeneratedToken& t : out.tokens) {
    chunk->add_token_ids(t.id);
    if (!logprobs_) continue;
    v1::TokenLogprob* lp = chunk->add_logprobs();
    lp->set_token_id(t.id);
    lp->set_logprob(t.logprob);
    for (std::size_t k = 0; k < t.top.size() && k < static_cast<std::size_t>(top_logprobs_); ++k) {
      v1::TopLogprob* alt = lp->add_top();
      alt->set_token_id(t.top[k].token);
      alt->set_logprob(t.top[k].logprob);
    }
  }
  chunk->mutable_text()->append(out.text);
  chunk->set_prompt_tokens(out.prompt_tokens);
  chunk->set_completion_tokens(out.completion_tokens);
}

void OutputAssembler::complete(const engine::RequestOutput& out, v1::Complete* c) const {
  c->set_index(out.index);
  c->set_finish_reason(finish_reason(out.finish_reason));
  c->set_prompt_tokens(out.prompt_tokens);
  c->set_completion_tokens(out.completion_tokens);
  c->set_cached_tokens(out.cached_prompt_tokens);
  c->set_request_id(request_id_);
  v1::Timings* t = c->mutable_timings();
  t->set_queue_seconds(out.queue_time);
  t->set_ttft_seconds(out.time_to_first_token);
  t->set_e2e_seconds(out.total_time);
  t->set_prefill_seconds(out.prefill_time);
  t->set_tpot_seconds(out.time_per_output_token);
  v1::MacStats* m = c->mutable_mac();
  m->set_decode_steps(out.mac.decode_steps);
  m->set_heads(out.mac.heads);
  m->set_eligible_heads(out.mac.eligible_heads);
  m->set_hit_heads(out.mac.hit_heads);
  m->set_kv_bytes_read(out.mac.kv_bytes_read);
  m->set_kv_bytes_full(out.mac.kv_bytes_full);
}

void OutputAssembler::add(const std::vector<engine::RequestOutput>& outs,
                          std::vector<v1::GenerateResponse>* messages) {
  std::vector<int> chunk_at;  // [index] position of this poll's Chunk in `messages`, or -1
  for (const engine::RequestOutput& out : outs) {
    if (out.index < 0) continue;
    const auto index = static_cast<std::size_t>(out.index);
    if (!stream_) {
      if (index >= whole_.size()) continue;
      append(out, &whole_[index]);
      if (!out.finished) continue;
      v1::Complete* c = messages->emplace_back().mutable_complete();
      complete(out, c);
      c->mutable_token_ids()->Swap(whole_[index].mutable_token_ids());
      c->mutable_text()->swap(*whole_[index].mutable_text());
      c->mutable_logprobs()->Swap(whole_[index].mutable_logprobs());
      continue;
    }
    if (!out.tokens.empty() || !out.text.empty()) {
      if (chunk_at.size() <= index) chunk_at.resize(index + 1, -1);
      if (chunk_at[index] < 0) {
        chunk_at[index] = static_cast<int>(messages->size());
        messages->emplace_back().mutable_chunk();
      }
      append(out, (*messages)[static_cast<std::size_t>(chunk_at[index])].mutable_chunk());
    }
    if (out.finished) {
      complete(out, messages->emplace_back().mutable_complete());
      if (chunk_at.size() > index) chunk_at[index] = -1;  // later outputs of this index: none
    }
  }
}

}  // namespace macserve::grpc_server
