#include "session.h"

#include <sys/socket.h>

#include <cerrno>
#include <ctime>
#include <random>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "macserve/openai/request_ids.h"
namespace macserve::http {
namespace {

using openai::constant_time_equal;
using openai::random_hex;
using openai::usable_request_id;

std::chrono::steady_clock::duration secs(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(s));
}

std::string_view sv(boost::beast::string_view s) { return {s.data(), s.size()}; }

struct Route {
  const char* path;
  bhttp::verb method;
  bool needs_auth;
};
constexpr Route kRoutes[] = {
    {"/v1/chat/completions", bhttp::verb::post, true},
    {"/v1/completions", bhttp::verb::post, true},
    {"/v1/models", bhttp::verb::get, true},
    {"/tokenize", bhttp::verb::post, true},
    {"/detokenize", bhttp::verb::post, true},
    {"/health", bhttp::verb::get, false},
    {"/metrics", bhttp::verb::get, false},
    {"/version", bhttp::verb::get, false},
};

openai::ApiError api_error(int status, std::string message, std::string type,
                           std::string code = {}) {
  openai::ApiError e;
  e.status = status;
  e.message = std::move(message);
  e.type = std::move(type);
  e.code = std::move(code);
  return e;
}

}  // namespace

struct Session::Generation {
  uint64_t id = 0;
  openai::Prepared prepared;
  std::unique_ptr<openai::ResponseBuilder> builder;
  std::vector<std::shared_ptr<engine::ResponseStream>> streams;
  std::vector<bool> done;
  std::vector<std::vector<Clock::time_point>>
      last_output;                          // [request][choice]: for inter-token latency
  std::vector<std::vector<bool>> finished;  // [request][choice]
  bool abandoned = false;

  void cancel_all() {
    for (auto& s : streams) {
      s->set_listener(nullptr);
      s->cancel();
    }
  }
};

struct Session::EventWriter {
  bhttp::response<bhttp::empty_body> head;
  std::optional<bhttp::response_serializer<bhttp::empty_body>> serializer;
  bool head_written = false;
  std::deque<std::string> pending;  // event text not written yet
  std::string in_flight;            // being written (kept alive for the write)
  bool writing = false;
  bool ending = false;  // write the last chunk once pending is empty
  bool ended = false;
};

Session::Session(tcp::socket socket, ServeState& state)
    : stream_(std::move(socket)), ex_(stream_.get_executor()), st_(state) {
  beast::error_code ec;
  const auto ep = stream_.socket().remote_endpoint(ec);
  if (!ec) peer_ = ep.address().to_string() + ":" + std::to_string(ep.port());
  st_.connections.fetch_add(1);
}

Session::~Session() {
  if (gen_) {
    gen_->cancel_all();
    st_.active_generations.fetch_sub(1);
  }
  st_.connections.fetch_sub(1);
}

void Session::start() {
  net::dispatch(ex_, [self = shared_from_this()] { self->read_next(); });
}

void Session::close() {
  net::post(ex_, [self = shared_from_this()] { self->shutdown_socket(); });
}

void Session::shutdown_socket() {
  if (closed_) return;
  closed_ = true;
  abandon_generation();
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.close();
}

// ---- reading -------------------------------------------------------------------------------

void Session::read_next() {
  if (closed_) return;
  parser_.emplace();
  parser_->header_limit(static_cast<std::uint32_t>(st_.options.max_header_bytes));
  parser_->body_limit(static_cast<std::uint64_t>(st_.options.max_body_bytes));
  if (buffer_.size() > 0) return read_request();
  // Idle keep-alive wait for the first bytes of the next request.
  stream_.expires_after(secs(st_.options.keep_alive_timeout));
  stream_.async_read_some(buffer_.prepare(4096),
                          [self = shared_from_this()](beast::error_code ec, std::size_t n) {
                            if (ec) return self->shutdown_socket();
                            self->buffer_.commit(n);
                            self->read_request();
                          });
}

void Session::read_request() {
  started_ = Clock::now();
  // The whole request (headers and body) must arrive within request_timeout.
  stream_.expires_after(secs(st_.options.request_timeout));
  bhttp::async_read_header(
      stream_, buffer_, *parser_, [self = shared_from_this()](beast::error_code ec, std::size_t) {
        if (ec) return self->on_read(ec);
        auto& req = self->parser_->get();
        if (req[bhttp::field::expect] == "100-continue" && !self->parser_->is_done()) {
          auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
          net::async_write(
              self->stream_, net::buffer(*cont), [self, cont](beast::error_code wec, std::size_t) {
                if (wec) return self->shutdown_socket();
                bhttp::async_read(
                    self->stream_, self->buffer_, *self->parser_,
                    [self](beast::error_code rec, std::size_t) { self->on_read(rec); });
              });
          return;
        }
        bhttp::async_read(self->stream_, self->buffer_, *self->parser_,
                          [self](beast::error_code rec, std::size_t) { self->on_read(rec); });
      });
}

void Session::on_read(beast::error_code ec) {
  if (closed_) return;
  if (ec == bhttp::error::end_of_stream || ec == net::error::eof ||
      ec == net::error::connection_reset || ec == net::error::operation_aborted)
    return shutdown_socket();
  if (ec == beast::error::timeout) {
    spdlog::debug("{}: request not received within {} s, closing", peer_,
                  st_.options.request_timeout);
    return shutdown_socket();
  }
  if (ec) {
    // The request cannot be read to its end: answer and close.
    const auto& partial = parser_->get();
    method_ = std::string(partial.method_string());
    target_ = std::string(partial.target());
    request_id_ = usable_request_id(sv(partial["X-Request-Id"]))
                      ? std::string(partial["X-Request-Id"])
                      : random_hex(16);
    origin_ = std::string(partial[bhttp::field::origin]);
    keep_alive_ = false;
    if (ec == bhttp::error::body_limit)
      return reply_error(api_error(
          413, fmt::format("the request body is larger than {} bytes", st_.options.max_body_bytes),
          "invalid_request_error", "request_too_large"));
    if (ec == bhttp::error::header_limit)
      return reply_error(api_error(
          431,
          fmt::format("the request headers are larger than {} bytes", st_.options.max_header_bytes),
          "invalid_request_error", "headers_too_large"));
    return reply_error(
        api_error(400, "malformed HTTP request: " + ec.message(), "invalid_request_error"));
  }
  handle(parser_->release());
}

void Session::handle(const bhttp::request<bhttp::string_body>& req) {
  method_ = std::string(req.method_string());
  target_ = std::string(req.target());
  keep_alive_ = req.keep_alive();
  const std::string_view id = sv(req["X-Request-Id"]);
  request_id_ = usable_request_id(id) ? std::string(id) : random_hex(16);
  origin_ = std::string(req[bhttp::field::origin]);
  const std::string path = target_.substr(0, target_.find('?'));
  try {
    route(req, path);
  } catch (const std::exception& e) {
    // Never with internal details in the answer; they go to the log.
    spdlog::error("{} {} [{}]: {}", method_, path, request_id_, e.what());
    if (gen_) abandon_generation();
    if (!events_)
      reply_error(api_error(500, "internal server error", "internal_server_error"));
    else
      shutdown_socket();
  }
}

// ---- routes --------------------------------------------------------------------------------

void Session::route(const bhttp::request<bhttp::string_body>& req, const std::string& path) {
  if (req.method() == bhttp::verb::options) return cors_preflight(req);
  const Route* route = nullptr;
  for (const Route& r : kRoutes)
    if (path == r.path) route = &r;
  if (route == nullptr)
    return reply_error(
        api_error(404, fmt::format("route {} not found", path.substr(0, 200)), "not_found_error"));
  if (req.method() != route->method) {
    const char* allow = route->method == bhttp::verb::get ? "GET" : "POST";
    return reply_error(
        api_error(405,
                  fmt::format("method {} is not allowed on {} (use {})",
                              std::string(req.method_string()).substr(0, 32), path, allow),
                  "invalid_request_error", "method_not_allowed"),
        {{"Allow", allow}});
  }
  if (path == "/health") return health();
  if (path == "/metrics") return metrics();
  if (path == "/version") return reply({200, nlohmann::json{{"version", st_.version}}.dump()});
  if (route->needs_auth && !authorized(req))
    return reply_error(
        api_error(401, "invalid or missing API key (send Authorization: Bearer <key>)",
                  "authentication_error", "invalid_api_key"),
        {{"WWW-Authenticate", "Bearer"}});
  if (st_.engine.load(std::memory_order_acquire) == nullptr)
    return reply_error(api_error(503, "the model is still loading", "service_unavailable"));
  if (st_.draining.load()) {
    keep_alive_ = false;
    return reply_error(api_error(503, "the server is shutting down", "service_unavailable"));
  }
  if (path == "/v1/models") return reply({200, openai::models_list(st_.model)});
  if (path == "/tokenize" || path == "/detokenize") {
    auto r = path == "/tokenize" ? openai::tokenize(req.body(), st_.model)
                                 : openai::detokenize(req.body(), st_.model);
    if (auto* e = std::get_if<openai::ApiError>(&r)) return reply_error(*e);
    return reply({200, std::move(std::get<std::string>(r))});
  }
  start_generation(path == "/v1/chat/completions" ? openai::Endpoint::kChatCompletions
                                                  : openai::Endpoint::kCompletions,
                   req.body());
}

bool Session::authorized(const bhttp::request<bhttp::string_body>& req) const {
  if (st_.options.api_key.empty()) return true;
  const std::string_view auth = sv(req[bhttp::field::authorization]);
  constexpr std::string_view kBearer = "Bearer ";
  if (auth.size() < kBearer.size() || auth.substr(0, kBearer.size()) != kBearer) return false;
  return constant_time_equal(auth.substr(kBearer.size()), st_.options.api_key);
}

void Session::health() {
  const engine::Engine* e = st_.engine.load(std::memory_order_acquire);
  if (e == nullptr) return reply({503, R"({"status":"loading"})"});
  if (st_.draining.load()) return reply({503, R"({"status":"draining"})"});
  const double idle = e->seconds_since_progress();
  if (idle > st_.options.health_stall_timeout) {
    spdlog::warn("health: the engine loop made no progress for {:.1f} s", idle);
    return reply(
        {503, nlohmann::json{{"status", "stalled"}, {"seconds_since_progress", idle}}.dump()});
  }
  reply({200, R"({"status":"ok"})"});
}

void Session::metrics() {
  const engine::Engine* e = st_.engine.load(std::memory_order_acquire);
  std::string text = st_.metrics->render(e != nullptr ? e->stats() : engine::EngineStats{});
  reply({200, std::move(text), "text/plain; version=0.0.4; charset=utf-8"});
}

void Session::cors_preflight(const bhttp::request<bhttp::string_body>& req) {
  const auto& allowed = st_.options.cors_origins;
  if (allowed.empty())
    return reply_error(api_error(405, "CORS is not enabled on this server (--cors-allowed-origins)",
                                 "invalid_request_error", "method_not_allowed"),
                       {{"Allow", "GET, POST"}});
  const bool ok = std::find(allowed.begin(), allowed.end(), "*") != allowed.end() ||
                  std::find(allowed.begin(), allowed.end(), origin_) != allowed.end();
  if (!ok) return reply_error(api_error(400, "disallowed CORS origin", "invalid_request_error"));
  Reply r{204, ""};
  r.content_type.clear();
  r.headers = {{"Access-Control-Allow-Methods", "GET, POST, OPTIONS"},
               {"Access-Control-Allow-Headers",
                req[bhttp::field::access_control_request_headers].empty()
                    ? std::string("Authorization, Content-Type, X-Request-Id")
                    : std::string(req[bhttp::field::access_control_request_headers])},
               {"Access-Control-Max-Age", "600"}};
  reply(std::move(r));
}

// ---- answers -------------------------------------------------------------------------------

void Session::add_common_headers(bhttp::fields& f) const {
  f.set(bhttp::field::server, "macserve/" + st_.version);
  f.set("X-Request-Id", request_id_);
  const auto& allowed = st_.options.cors_origins;
  if (!allowed.empty() && !origin_.empty()) {
    const bool any = std::find(allowed.begin(), allowed.end(), "*") != allowed.end();
    if (any || std::find(allowed.begin(), allowed.end(), origin_) != allowed.end()) {
      f.set(bhttp::field::access_control_allow_origin, any ? "*" : origin_);
      f.set(bhttp::field::vary, "Origin");
      f.set(bhttp::field::access_control_expose_headers, "X-Request-Id");
    }
  }
}

void Session::reply(Reply r) {
  if (closed_) return;
  auto res = std::make_shared<bhttp::response<bhttp::string_body>>(
      static_cast<bhttp::status>(r.status), 11);
  add_common_headers(*res);
  if (!r.content_type.empty()) res->set(bhttp::field::content_type, r.content_type);
  for (auto& [k, v] : r.headers) res->set(k, v);
  res->keep_alive(keep_alive_ && !st_.draining.load());
  res->body() = std::move(r.body);
  res->prepare_payload();
  stream_.expires_after(secs(st_.options.write_timeout));
  bhttp::async_write(stream_, *res,
                     [self = shared_from_this(), res](beast::error_code ec, std::size_t) {
                       if (ec) return self->shutdown_socket();
                       self->after_response(res->result_int(), res->keep_alive());
                     });
}

void Session::reply_error(const openai::ApiError& e,
                          std::vector<std::pair<std::string, std::string>> headers) {
  Reply r{e.status, e.to_json()};
  r.headers = std::move(headers);
  reply(std::move(r));
}

void Session::after_response(int status, bool keep_alive) {
  st_.metrics->on_http_response(status);
  log_access(status);
  events_.reset();
  if (!keep_alive || st_.draining.load() || closed_) return shutdown_socket();
  read_next();
}

void Session::log_access(int status) const {
  if (!st_.options.access_log) return;
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - started_).count();
  spdlog::info("{} \"{} {}\" {} {:.1f} ms request_id={}", peer_, method_.substr(0, 16),
               target_.substr(0, 200), status, ms, request_id_);
}

// ---- server-sent events --------------------------------------------------------------------

void Session::start_events() {
  events_ = std::make_unique<EventWriter>();
  auto& h = events_->head;
  h.result(bhttp::status::ok);
  h.version(11);
  add_common_headers(h);
  h.set(bhttp::field::content_type, "text/event-stream");
  h.set(bhttp::field::cache_control, "no-cache");
  h.set("X-Accel-Buffering", "no");
  h.keep_alive(keep_alive_ && !st_.draining.load());
  h.chunked(true);
  events_->serializer.emplace(h);
  write_pending();
}

void Session::queue_event(const std::string& json) {
  events_->pending.push_back("data: " + json + "\n\n");
  write_pending();
}

void Session::end_events() {
  events_->ending = true;
  write_pending();
}

void Session::write_pending() {
  if (closed_ || !events_ || events_->writing) return;
  EventWriter& ev = *events_;
  auto self = shared_from_this();
  stream_.expires_after(secs(st_.options.write_timeout));
  if (!ev.head_written) {
    ev.writing = true;
    bhttp::async_write_header(stream_, *ev.serializer, [self](beast::error_code ec, std::size_t) {
      if (ec || !self->events_) return self->shutdown_socket();
      self->events_->writing = false;
      self->events_->head_written = true;
      self->write_pending();
    });
    return;
  }
  if (!ev.pending.empty()) {
    // Everything queued so far goes out as one chunk.
    ev.in_flight.clear();
    for (auto& p : ev.pending) ev.in_flight += p;
    ev.pending.clear();
    ev.writing = true;
    net::async_write(stream_, bhttp::make_chunk(net::buffer(ev.in_flight)),
                     [self](beast::error_code ec, std::size_t) {
                       if (ec || !self->events_) return self->shutdown_socket();
                       self->events_->writing = false;
                       self->write_pending();
                     });
    return;
  }
  if (ev.ending && !ev.ended) {
    ev.ended = true;
    ev.writing = true;
    const bool keep_alive = ev.head.keep_alive();
    net::async_write(stream_, bhttp::make_chunk_last(),
                     [self, keep_alive](beast::error_code ec, std::size_t) {
                       if (ec) return self->shutdown_socket();
                       self->after_response(200, keep_alive);
                     });
  }
}

// ---- generation ----------------------------------------------------------------------------

void Session::start_generation(openai::Endpoint endpoint, const std::string& body) {
  auto prepared = openai::prepare(endpoint, body, st_.model);
  if (auto* e = std::get_if<openai::ApiError>(&prepared)) return reply_error(*e);
  engine::Engine* eng = st_.engine.load(std::memory_order_acquire);
  auto g = std::make_unique<Generation>();
  g->id = ++next_generation_id_;
  g->prepared = std::move(std::get<openai::Prepared>(prepared));
  const bool chat = endpoint == openai::Endpoint::kChatCompletions;
  g->builder = std::make_unique<openai::ResponseBuilder>(
      g->prepared, st_.model, (chat ? "chatcmpl-" : "cmpl-") + random_hex(12),
      static_cast<int64_t>(std::time(nullptr)));
  const std::size_t num = g->prepared.requests.size();
  g->done.assign(num, false);
  g->last_output.assign(num,
                        std::vector<Clock::time_point>(static_cast<std::size_t>(g->prepared.n)));
  g->finished.assign(num, std::vector<bool>(static_cast<std::size_t>(g->prepared.n), false));
  gen_ = std::move(g);
  st_.active_generations.fetch_add(1);
  std::weak_ptr<Session> weak = weak_from_this();
  const uint64_t gid = gen_->id;
  for (std::size_t r = 0; r < num; ++r) {
    engine::Request req = gen_->prepared.requests[r];
    req.id = num > 1 ? fmt::format("{}-{}", request_id_, r) : request_id_;
    auto stream = eng->submit(std::move(req));
    stream->set_listener([weak, ex = ex_, gid] {
      net::post(ex, [weak, gid] {
        if (auto s = weak.lock()) s->on_engine_output(gid);
      });
    });
    gen_->streams.push_back(std::move(stream));
  }
  // Outputs pushed before the listeners were set (e.g. an immediate rejection) are taken now.
  on_engine_output(gid);
  if (gen_ && gen_->id == gid) watch_disconnect();
}

void Session::watch_disconnect() {
  const uint64_t gid = gen_->id;
  stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(),
                                                       gid](beast::error_code ec) {
    if (!self->gen_ || self->gen_->id != gid || self->closed_) return;
    if (ec == net::error::operation_aborted) return;
    // A readiness event can be stale (another I/O thread may have read the bytes that caused it),
    // so peek: 0 bytes is the peer's FIN, EAGAIN is a stale wake-up (watch again), data is a
    // pipelined request (read after this answer).
    char byte = 0;
    const auto n =
        ec ? -1 : ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && !ec && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
      return self->watch_disconnect();
    if (n <= 0) {
      spdlog::info("{} request_id={}: client disconnected, cancelling", self->peer_,
                   self->request_id_);
      self->shutdown_socket();
    }
  });
}

void Session::on_engine_output(uint64_t gid) {
  if (!gen_ || gen_->id != gid || closed_) return;
  Generation& g = *gen_;
  const bool streaming = g.prepared.stream;
  std::vector<std::string> chunks;
  std::vector<engine::RequestOutput> outs;
  bool all_done = true;
  const auto now = Clock::now();
  for (std::size_t r = 0; r < g.streams.size(); ++r) {
    if (g.done[r]) continue;
    outs.clear();
    const bool done = g.streams[r]->poll(outs);
    for (const engine::RequestOutput& out : outs) {
      const auto c = static_cast<std::size_t>(out.index);
      if (c < g.last_output[r].size()) {
        if (g.last_output[r][c] != Clock::time_point{} && !out.tokens.empty())
          st_.metrics->observe_inter_token(
              std::chrono::duration<double>(now - g.last_output[r][c]).count(),
              static_cast<int64_t>(out.tokens.size()), metrics::Frontend::kHttp);
        if (!out.tokens.empty()) g.last_output[r][c] = now;
        if (out.finished) g.finished[r][c] = true;
      }
      if (out.finished) st_.metrics->on_completion_finished(out, metrics::Frontend::kHttp);
      g.builder->add(r, out, streaming ? &chunks : nullptr);
    }
    if (done)
      g.done[r] = true;
    else
      all_done = false;
  }
  if (const auto& err = g.builder->error()) {
    const openai::ApiError e = *err;
    g.cancel_all();
    finish_generation();
    if (events_) {
      // Headers went out already: the error travels as an event, then [DONE].
      queue_event(e.to_json());
      queue_event("[DONE]");
      return end_events();
    }
    return reply_error(e);
  }
  if (streaming) {
    if (!chunks.empty() && !events_) start_events();
    for (const auto& c : chunks) queue_event(c);
    if (all_done) {
      std::vector<std::string> tail;
      g.builder->finish_stream(&tail);
      if (!events_) start_events();
      for (const auto& c : tail) queue_event(c);
      queue_event("[DONE]");
      finish_generation();
      end_events();
    }
  } else if (all_done) {
    std::string body = g.builder->response();
    finish_generation();
    reply({200, std::move(body)});
  }
}

void Session::finish_generation() {
  if (!gen_) return;
  for (auto& s : gen_->streams) s->set_listener(nullptr);
  gen_.reset();
  st_.active_generations.fetch_sub(1);
}

void Session::abandon_generation() {
  if (!gen_) return;
  gen_->cancel_all();
  // Completions that never finished count as aborted.
  for (const auto& per_request : gen_->finished)
    for (bool f : per_request)
      if (!f) {
        engine::RequestOutput aborted;
        aborted.finished = true;
        aborted.finish_reason = engine::FinishReason::kAbort;
        st_.metrics->on_completion_finished(aborted, metrics::Frontend::kHttp);
      }
  finish_generation();
}

}  // namespace macserve::http
