// Engine outputs -> chat.completion / text_completion objects and their streaming chunks.
#include <algorithm>
#include <cmath>

#include "json_fields.h"
#include "macserve/openai/protocol.h"

namespace macserve::openai {

using ojson = nlohmann::ordered_json;

struct ResponseBuilder::Choice {
  std::string text;                            // generated text so far (without echo)
  std::vector<engine::GeneratedToken> tokens;  // kept for non-streaming logprobs
  const char* finish_reason = nullptr;         // null while running
  bool started = false;                        // streaming: role / echo chunk sent
  bool finished = false;
  int64_t num_tokens = 0;
  int64_t completion_tokens = 0;
  int64_t text_offset = 0;  // completions logprobs: code points before the next token
};

namespace {

// Engine finish reasons -> OpenAI's (abort: vLLM's name for a cancelled or timed-out request).
const char* finish_reason_name(engine::FinishReason r) {
  switch (r) {
    case engine::FinishReason::kStop:
      return "stop";
    case engine::FinishReason::kLength:
      return "length";
    case engine::FinishReason::kAbort:
      return "abort";
    case engine::FinishReason::kError:
    case engine::FinishReason::kNone:
      return nullptr;
  }
  return nullptr;
}

ojson reason_json(const char* r) { return r != nullptr ? ojson(r) : ojson(nullptr); }

// JSON has no -inf: very unlikely tokens get vLLM's floor.
double finite_logprob(float lp) { return std::isfinite(lp) ? static_cast<double>(lp) : -9999.0; }

// What a token "says": its bytes, or its piece for special tokens (which have no text bytes).
std::string token_raw(const tokenizer::Tokenizer& tok, int32_t id) {
  if (id < 0 || id >= tok.vocab_size()) return {};
  return tok.is_special(id) ? tok.id_to_piece(id) : tok.token_bytes(id);
}

ojson bytes_json(const std::string& raw) {
  ojson b = ojson::array();
  for (const char c : raw) b.push_back(static_cast<int>(static_cast<unsigned char>(c)));
  return b;
}

ojson chat_logprob_entry(const tokenizer::Tokenizer& tok, int32_t id, float lp) {
  const std::string raw = token_raw(tok, id);
  return ojson{{"token", detail::sanitize_utf8(raw)},
               {"logprob", finite_logprob(lp)},
               {"bytes", bytes_json(raw)}};
}

// {"content": [{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}]}
ojson chat_logprobs(const tokenizer::Tokenizer& tok,
                    const std::vector<engine::GeneratedToken>& tokens, int32_t top) {
  ojson content = ojson::array();
  for (const auto& t : tokens) {
    ojson e = chat_logprob_entry(tok, t.id, t.logprob);
    ojson alts = ojson::array();
    for (std::size_t k = 0; k < t.top.size() && k < static_cast<std::size_t>(top); ++k)
      alts.push_back(chat_logprob_entry(tok, t.top[k].token, t.top[k].logprob));
    e["top_logprobs"] = std::move(alts);
    content.push_back(std::move(e));
  }
  return ojson{{"content", std::move(content)}};
}

// {tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}; the sampled token is
// always in its top_logprobs entry (vLLM), so logprobs=0 gives one entry per token.
ojson completion_logprobs(const tokenizer::Tokenizer& tok,
                          const std::vector<engine::GeneratedToken>& tokens, int32_t top,
                          int64_t* offset) {
  ojson toks = ojson::array(), lps = ojson::array(), tops = ojson::array(), offs = ojson::array();
  for (const auto& t : tokens) {
    const std::string text = detail::sanitize_utf8(token_raw(tok, t.id));
    toks.push_back(text);
    lps.push_back(finite_logprob(t.logprob));
    ojson alts = ojson::object();
    for (std::size_t k = 0; k < t.top.size() && k < static_cast<std::size_t>(top); ++k)
      alts[detail::sanitize_utf8(token_raw(tok, t.top[k].token))] =
          finite_logprob(t.top[k].logprob);
    if (!alts.contains(text)) alts[text] = finite_logprob(t.logprob);
    tops.push_back(std::move(alts));
    offs.push_back(*offset);
    *offset += detail::count_code_points(text);
  }
  return ojson{{"tokens", std::move(toks)},
               {"token_logprobs", std::move(lps)},
               {"top_logprobs", std::move(tops)},
               {"text_offset", std::move(offs)}};
}

}  // namespace

ResponseBuilder::ResponseBuilder(const Prepared& prepared, const ServedModel& model, std::string id,
                                 int64_t created)
    : prepared_(&prepared), model_(&model), id_(std::move(id)), created_(created) {
  const char* prefix = prepared.endpoint == Endpoint::kChatCompletions ? "chatcmpl-" : "cmpl-";
  if (id_.rfind(prefix, 0) != 0) id_ = prefix + id_;
  const int32_t n = std::max(prepared.n, 1);
  choices_.resize(prepared.requests.size() * static_cast<std::size_t>(n));
  for (const auto& r : prepared.requests)
    prompt_tokens_.push_back(static_cast<int64_t>(r.prompt_ids.size()));
  for (std::size_t i = 0; i < choices_.size(); ++i) {
    const std::size_t p = i / static_cast<std::size_t>(n);
    if (prepared.echo && p < prepared.prompt_texts.size())
      choices_[i].text_offset = detail::count_code_points(prepared.prompt_texts[p]);
  }
}

ResponseBuilder::~ResponseBuilder() = default;
ResponseBuilder::ResponseBuilder(ResponseBuilder&&) noexcept = default;
ResponseBuilder& ResponseBuilder::operator=(ResponseBuilder&&) noexcept = default;

void ResponseBuilder::add(size_t request_index, const engine::RequestOutput& out,
                          std::vector<std::string>* chunks) {
  const int32_t n = std::max(prepared_->n, 1);
  if (request_index >= prepared_->requests.size() || out.index < 0 || out.index >= n) return;
  const std::size_t index =
      request_index * static_cast<std::size_t>(n) + static_cast<std::size_t>(out.index);
  Choice& c = choices_[index];
  if (c.finished) return;
  if (out.finish_reason == engine::FinishReason::kError) {
    if (!error_) error_ = error_from_engine(out);
    c.finished = true;
    return;
  }
  c.text += out.text;
  c.num_tokens += static_cast<int64_t>(out.tokens.size());
  c.completion_tokens = std::max(out.completion_tokens, c.num_tokens);
  if (out.finished) {
    c.finished = true;
    c.finish_reason = finish_reason_name(out.finish_reason);
  }
  const bool chat = prepared_->endpoint == Endpoint::kChatCompletions;
  if (!prepared_->stream || chunks == nullptr) {
    if (prepared_->logprobs) c.tokens.insert(c.tokens.end(), out.tokens.begin(), out.tokens.end());
    return;
  }

  ojson head = {{"id", id_},
                {"object", chat ? "chat.completion.chunk" : "text_completion"},
                {"created", created_},
                {"model", prepared_->model}};
  auto emit = [&](ojson choice) {
    ojson chunk = head;
    chunk["choices"] = ojson::array({std::move(choice)});
    if (prepared_->include_usage) chunk["usage"] = nullptr;
    chunks->push_back(detail::dump_any(chunk));
  };
  if (!c.started) {
    c.started = true;
    if (chat) {
      emit(ojson{{"index", index},
                 {"delta", {{"role", "assistant"}, {"content", ""}}},
                 {"logprobs", nullptr},
                 {"finish_reason", nullptr}});
    } else if (prepared_->echo && request_index < prepared_->prompt_texts.size()) {
      emit(ojson{{"index", index},
                 {"text", prepared_->prompt_texts[request_index]},
                 {"logprobs", nullptr},
                 {"finish_reason", nullptr}});
    }
  }
  const bool has_logprobs = prepared_->logprobs && !out.tokens.empty();
  if (out.text.empty() && !out.finished && !has_logprobs) return;
  const tokenizer::Tokenizer& tok = *model_->tokenizer;
  ojson lp = nullptr;
  if (has_logprobs)
    lp = chat ? chat_logprobs(tok, out.tokens, prepared_->top_logprobs)
              : completion_logprobs(tok, out.tokens, prepared_->top_logprobs, &c.text_offset);
  if (chat) {
    ojson delta = ojson::object();
    if (!out.text.empty() || !out.finished) delta["content"] = out.text;
    emit(ojson{{"index", index},
               {"delta", std::move(delta)},
               {"logprobs", std::move(lp)},
               {"finish_reason", reason_json(c.finish_reason)}});
  } else {
    emit(ojson{{"index", index},
               {"text", out.text},
               {"logprobs", std::move(lp)},
               {"finish_reason", reason_json(c.finish_reason)}});
  }
}

void ResponseBuilder::finish_stream(std::vector<std::string>* chunks) {
  if (!prepared_->stream || !prepared_->include_usage || chunks == nullptr) return;
  const bool chat = prepared_->endpoint == Endpoint::kChatCompletions;
  const int64_t p = prompt_tokens(), c = completion_tokens();
  ojson chunk = {
      {"id", id_},
      {"object", chat ? "chat.completion.chunk" : "text_completion"},
      {"created", created_},
      {"model", prepared_->model},
      {"choices", ojson::array()},
      {"usage", {{"prompt_tokens", p}, {"completion_tokens", c}, {"total_tokens", p + c}}}};
  chunks->push_back(detail::dump_any(chunk));
}

std::string ResponseBuilder::response() const {
  const bool chat = prepared_->endpoint == Endpoint::kChatCompletions;
  const int32_t n = std::max(prepared_->n, 1);
  const tokenizer::Tokenizer& tok = *model_->tokenizer;
  ojson choices = ojson::array();
  for (std::size_t i = 0; i < choices_.size(); ++i) {
    const Choice& c = choices_[i];
    ojson lp = nullptr;
    if (chat) {
      if (prepared_->logprobs) lp = chat_logprobs(tok, c.tokens, prepared_->top_logprobs);
      choices.push_back(ojson{{"index", i},
                              {"message", {{"role", "assistant"}, {"content", c.text}}},
                              {"logprobs", std::move(lp)},
                              {"finish_reason", reason_json(c.finish_reason)}});
      continue;
    }
    const std::size_t p = i / static_cast<std::size_t>(n);
    std::string text =
        prepared_->echo && p < prepared_->prompt_texts.size() ? prepared_->prompt_texts[p] : "";
    int64_t offset = detail::count_code_points(text);
    text += c.text;
    if (prepared_->logprobs)
      lp = completion_logprobs(tok, c.tokens, prepared_->top_logprobs, &offset);
    choices.push_back(ojson{{"index", i},
                            {"text", std::move(text)},
                            {"logprobs", std::move(lp)},
                            {"finish_reason", reason_json(c.finish_reason)}});
  }
  const int64_t pt = prompt_tokens(), ct = completion_tokens();
  const ojson body = {
      {"id", id_},
      {"object", chat ? "chat.completion" : "text_completion"},
      {"created", created_},
      {"model", prepared_->model},
      {"choices", std::move(choices)},
      {"usage", {{"prompt_tokens", pt}, {"completion_tokens", ct}, {"total_tokens", pt + ct}}}};
  return detail::dump_any(body);
}

int64_t ResponseBuilder::prompt_tokens() const {
  int64_t sum = 0;
  for (const int64_t p : prompt_tokens_) sum += p;
  return sum;
}

int64_t ResponseBuilder::completion_tokens() const {
  int64_t sum = 0;
  for (const auto& c : choices_) sum += c.completion_tokens;
  return sum;
}

}  // namespace macserve::openai
