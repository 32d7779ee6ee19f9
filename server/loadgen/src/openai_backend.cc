// openai / openai-chat: streaming completions over SSE with `stream_options.include_usage`, so
// output token counts come from the server. TTFT and ITL are taken per chunk that carries text
// (the chat stream's first role-only chunk is not a token).
#include <nlohmann/json.hpp>

#include "macserve/core/error.h"
#include "macserve/loadgen/backend.h"
#include "macserve/loadgen/sse.h"

namespace macserve::loadgen {

bool parse_openai_chunk(std::string_view data, OpenAiChunk& out) {
  out = OpenAiChunk{};
  if (data == "[DONE]") {
    out.is_done = true;
    return true;
  }
  const auto j = nlohmann::json::parse(data, nullptr, false);
  if (!j.is_object()) return false;
  if (auto e = j.find("error"); e != j.end()) {
    out.error = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                    ? (*e)["message"].get<std::string>()
                    : e->dump();
    return true;
  }
  if (auto c = j.find("choices");
      c != j.end() && c->is_array() && !c->empty() && (*c)[0].is_object()) {
    const auto& ch = (*c)[0];
    const nlohmann::json* text = nullptr;
    if (auto t = ch.find("text"); t != ch.end()) text = &*t;
    if (auto d = ch.find("delta"); d != ch.end() && d->is_object())
      if (auto t = d->find("content"); t != d->end()) text = &*t;
    if (text != nullptr && text->is_string()) out.text = text->get<std::string>();
    if (auto f = ch.find("finish_reason"); f != ch.end() && f->is_string())
      out.finish_reason = f->get<std::string>();
  }
  if (auto u = j.find("usage"); u != j.end() && u->is_object()) {
    if (auto p = u->find("prompt_tokens"); p != u->end() && p->is_number_integer())
      out.prompt_tokens = p->get<int64_t>();
    if (auto p = u->find("completion_tokens"); p != u->end() && p->is_number_integer())
      out.completion_tokens = p->get<int64_t>();
  }
  return true;
}

namespace {

class OpenAiBackend final : public Backend {
 public:
  OpenAiBackend(boost::asio::io_context& ioc, const BackendOptions& opt)
      : opt_(opt), chat_(opt.name == "openai-chat"), client_(ioc, opt.url.host, opt.url.port) {
    path_ = opt.url.path_prefix + (opt.endpoint.empty()
                                       ? (chat_ ? "/v1/chat/completions" : "/v1/completions")
                                       : opt.endpoint);
  }

  std::string endpoint() const override { return path_; }

  void send(const SampleRequest& sample, RequestRecord& rec, Clock::time_point start,
            std::function<void()> done) override {
    HttpRequest req;
    req.path = path_;
    req.timeout_s = opt_.timeout_s;
    req.headers = {{"Content-Type", "application/json"}, {"Accept", "text/event-stream"}};
    if (!opt_.api_key.empty()) req.headers.emplace_back("Authorization", "Bearer " + opt_.api_key);
    req.body = body(sample);
    auto st = std::make_shared<State>(rec, start, std::move(done));
    HttpCallbacks cb;
    cb.on_status = [st](int s) { st->status = s; };
    cb.on_body = [st](std::string_view b, Clock::time_point t) {
      if (st->status != 200) {
        if (st->error_body.size() < 8192) st->error_body.append(b);
        return;
      }
      st->now = t;
      st->sse.feed(b);
    };
    cb.on_done = [st](const std::string& kind, const std::string& msg) { st->finish(kind, msg); };
    client_.send(std::move(req), std::move(cb));
  }

 private:
  struct State {
    State(RequestRecord& r, Clock::time_point s, std::function<void()> d)
        : rec(r),
          start(s),
          done(std::move(d)),
          sse([this](std::string_view data) { on_event(data); }) {}
    RequestRecord& rec;
    Clock::time_point start;
    std::function<void()> done;
    SseParser sse;
    Clock::time_point now;
    int status = 0;
    std::string error_body;
    std::string stream_error;
    bool saw_done = false;

    double since_start(Clock::time_point t) const {
      return std::chrono::duration<double>(t - start).count();
    }

    void on_event(std::string_view data) {
      OpenAiChunk c;
      if (!parse_openai_chunk(data, c)) {
        if (stream_error.empty())
          stream_error = "unparsable SSE data: " + std::string(data.substr(0, 200));
        return;
      }
      if (c.is_done) saw_done = true;
      if (!c.error.empty()) stream_error = c.error;
      if (!c.text.empty()) {
        const double t = since_start(now);
        if (rec.chunk_times_s.empty()) rec.ttft_s = t;
        rec.chunk_times_s.push_back(t);
        rec.latency_s = t;
        rec.generated_text += c.text;
      }
      if (!c.finish_reason.empty()) rec.finish_reason = c.finish_reason;
      if (c.completion_tokens >= 0) rec.output_tokens = c.completion_tokens;
      if (c.prompt_tokens >= 0) rec.server_prompt_tokens = c.prompt_tokens;
    }

    void finish(const std::string& kind, const std::string& msg) {
      if (kind.empty() && status == 200) sse.finish();
      if (!kind.empty()) {
        rec.error_kind = kind;
        rec.error = msg;
      } else if (status != 200) {
        rec.error_kind = "http_" + std::to_string(status);
        const auto j = nlohmann::json::parse(error_body, nullptr, false);
        rec.error = j.is_object() && j.contains("error") && j["error"].is_object() &&
                            j["error"].contains("message")
                        ? j["error"]["message"].dump()
                        : error_body.substr(0, 500);
      } else if (!stream_error.empty()) {
        rec.error_kind = "stream_error";
        rec.error = stream_error;
      } else if (!saw_done) {
        rec.error_kind = "disconnect";
        rec.error = "the stream ended before data: [DONE]";
      } else {
        rec.success = true;
        if (rec.chunk_times_s.empty()) rec.latency_s = since_start(Clock::now());
      }
      auto d = std::move(done);
      d();
    }
  };

  std::string body(const SampleRequest& s) const {
    nlohmann::ordered_json j;
    j["model"] = opt_.model;
    if (chat_) {
      j["messages"] = nlohmann::ordered_json::array({{{"role", "user"}, {"content", s.prompt}}});
      j["max_completion_tokens"] = s.output_len;
    } else {
      j["prompt"] = s.prompt;
      j["max_tokens"] = s.output_len;
    }
    j["temperature"] = opt_.temperature;
    j["stream"] = true;
    j["stream_options"] = {{"include_usage", true}};
    if (opt_.ignore_eos) j["ignore_eos"] = true;
    return j.dump();
  }

  BackendOptions opt_;
  bool chat_;
  std::string path_;
  HttpClient client_;
};

}  // namespace

std::unique_ptr<Backend> make_openai_backend(boost::asio::io_context& ioc,
                                             const BackendOptions& opt) {
  return std::make_unique<OpenAiBackend>(ioc, opt);
}

}  // namespace macserve::loadgen
