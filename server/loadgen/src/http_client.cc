#include "macserve/loadgen/http_client.h"

#include <utility>  // before Asio (Boost 1.74 + g++ 12 in C++20, see docs/architecture.md)

#include <array>
#include <boost/asio.hpp>
#include <charconv>

#include "macserve/core/error.h"
#include "macserve/loadgen/http_response_parser.h"

namespace macserve::loadgen {

namespace net = boost::asio;
using tcp = net::ip::tcp;

BaseUrl parse_base_url(const std::string& url) {
  std::string_view s = url;
  if (s.substr(0, 7) != "http://")
    throw_error(ErrorCode::kInvalidArgument, "--base-url {}: only http:// URLs are supported", url);
  s.remove_prefix(7);
  const auto slash = s.find('/');
  std::string_view hostport = s.substr(0, slash);
  BaseUrl out;
  out.path_prefix = slash == std::string_view::npos ? "" : std::string(s.substr(slash));
  while (!out.path_prefix.empty() && out.path_prefix.back() == '/') out.path_prefix.pop_back();
  const auto colon = hostport.rfind(':');
  if (colon != std::string_view::npos && hostport.find(']') == std::string_view::npos) {
    unsigned port = 0;
    const std::string_view p = hostport.substr(colon + 1);
    if (std::from_chars(p.data(), p.data() + p.size(), port).ec != std::errc() || port == 0 ||
        port > 65535)
      throw_error(ErrorCode::kInvalidArgument, "--base-url {}: bad port", url);
    out.port = static_cast<uint16_t>(port);
    hostport = hostport.substr(0, colon);
  }
  if (hostport.empty()) throw_error(ErrorCode::kInvalidArgument, "--base-url {}: no host", url);
  out.host = std::string(hostport);
  return out;
}

namespace {

struct Conn {
  explicit Conn(net::io_context& ioc) : sock(ioc) {}
  tcp::socket sock;
  bool reused = false;
  std::array<char, 16384> rbuf{};
};

}  // namespace

struct HttpClient::Impl : std::enable_shared_from_this<HttpClient::Impl> {
  Impl(net::io_context& c, const std::string& h, uint16_t p) : ioc(c), host(h), port(p) {
    tcp::resolver resolver(ioc);
    boost::system::error_code ec;
    endpoints = resolver.resolve(host, std::to_string(port), ec);
    if (ec) throw_error(ErrorCode::kInvalidArgument, "cannot resolve {}: {}", host, ec.message());
  }

  net::io_context& ioc;
  std::string host;
  uint16_t port;
  tcp::resolver::results_type endpoints;
  std::vector<std::shared_ptr<Conn>> idle;
  int64_t opened = 0;
};

namespace {

// One request/response on one connection; owns itself through the pending async operations.
struct Exchange : std::enable_shared_from_this<Exchange> {
  Exchange(std::shared_ptr<HttpClient::Impl> c, HttpRequest r, HttpCallbacks cb)
      : client(std::move(c)),
        req(std::move(r)),
        cbs(std::move(cb)),
        timer(client->ioc),
        parser([this](std::string_view b) {
          report_status();  // the status must be known before the first body bytes
          if (cbs.on_body) cbs.on_body(b, read_time);
        }) {}

  std::shared_ptr<HttpClient::Impl> client;
  HttpRequest req;
  HttpCallbacks cbs;
  net::steady_timer timer;
  HttpResponseParser parser;
  std::shared_ptr<Conn> conn;
  std::string wire;
  Clock::time_point read_time;
  bool got_bytes = false;
  bool finished = false;
  bool timed_out = false;
  bool status_sent = false;
  int attempts = 0;

  void report_status() {
    if (status_sent) return;
    status_sent = true;
    if (cbs.on_status) cbs.on_status(parser.status());
  }

  void start() {
    wire = req.method + " " + req.path + " HTTP/1.1\r\nHost: " + client->host + ":" +
           std::to_string(client->port) + "\r\nContent-Length: " + std::to_string(req.body.size()) +
           "\r\n";
    for (const auto& [k, v] : req.headers) wire.append(k).append(": ").append(v).append("\r\n");
    wire += "\r\n";
    wire += req.body;
    if (req.timeout_s > 0) {
      timer.expires_after(std::chrono::duration_cast<Clock::duration>(
          std::chrono::duration<double>(req.timeout_s)));
      timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (ec || self->finished) return;
        self->timed_out = true;
        boost::system::error_code ignored;
        if (self->conn) self->conn->sock.close(ignored);
      });
    }
    attempt();
  }

  void attempt() {
    ++attempts;
    if (!client->idle.empty()) {
      conn = std::move(client->idle.back());
      client->idle.pop_back();
      conn->reused = true;
      write();
      return;
    }
    conn = std::make_shared<Conn>(client->ioc);
    ++client->opened;
    net::async_connect(
        conn->sock, client->endpoints,
        [self = shared_from_this()](boost::system::error_code ec, const tcp::endpoint&) {
          if (ec) return self->finish(self->timed_out ? "timeout" : "connect", ec.message());
          boost::system::error_code ignored;
          self->conn->sock.set_option(tcp::no_delay(true), ignored);
          self->write();
        });
  }

  void write() {
    net::async_write(conn->sock, net::buffer(wire),
                     [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                       if (ec) return self->transport_error(ec);
                       self->read();
                     });
  }

  void read() {
    conn->sock.async_read_some(
        net::buffer(conn->rbuf),
        [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
          self->read_time = Clock::now();
          if (ec) {
            if (ec == net::error::eof) {
              self->parser.on_eof();
              if (self->parser.done()) return self->finish("", "");
            }
            return self->transport_error(ec);
          }
          self->got_bytes = true;
          if (!self->parser.feed(std::string_view(self->conn->rbuf.data(), n)))
            return self->finish("protocol", self->parser.error());
          if (self->parser.headers_done()) self->report_status();
          if (self->finished) return;  // a callback ended it
          if (self->parser.done()) return self->finish("", "");
          self->read();
        });
  }

  void transport_error(const boost::system::error_code& ec) {
    if (finished) return;
    if (!got_bytes && conn->reused && attempts == 1 && !timed_out) {  // stale keep-alive connection
      boost::system::error_code ignored;
      conn->sock.close(ignored);
      conn.reset();
      return attempt();
    }
    finish(timed_out ? "timeout" : "disconnect", ec.message());
  }

  void finish(const std::string& kind, const std::string& message) {
    if (finished) return;
    finished = true;
    timer.cancel();
    if (conn) {
      if (kind.empty() && parser.keep_alive() && conn->sock.is_open() &&
          client->idle.size() < 4096) {
        client->idle.push_back(std::move(conn));
      } else {
        boost::system::error_code ignored;
        conn->sock.close(ignored);
      }
      conn.reset();
    }
    if (cbs.on_done) cbs.on_done(kind, message);
  }
};

}  // namespace

HttpClient::HttpClient(net::io_context& ioc, const std::string& host, uint16_t port)
    : impl_(std::make_shared<Impl>(ioc, host, port)) {}

HttpClient::~HttpClient() { close_idle(); }

void HttpClient::send(HttpRequest request, HttpCallbacks callbacks) {
  std::make_shared<Exchange>(impl_, std::move(request), std::move(callbacks))->start();
}

int64_t HttpClient::num_connections_opened() const { return impl_->opened; }

void HttpClient::close_idle() {
  for (auto& c : impl_->idle) {
    boost::system::error_code ignored;
    c->sock.close(ignored);
  }
  impl_->idle.clear();
}

SimpleResponse http_fetch(const BaseUrl& url, const std::string& method, const std::string& path,
                          const std::vector<std::pair<std::string, std::string>>& headers,
                          const std::string& body, double timeout_s) {
  net::io_context ioc(1);
  SimpleResponse out;
  try {
    HttpClient client(ioc, url.host, url.port);
    HttpRequest req;
    req.method = method;
    req.path = url.path_prefix + path;
    req.headers = headers;
    req.body = body;
    req.timeout_s = timeout_s;
    HttpCallbacks cb;
    cb.on_status = [&](int s) { out.status = s; };
    cb.on_body = [&](std::string_view b, Clock::time_point) { out.body.append(b); };
    cb.on_done = [&](const std::string& kind, const std::string& msg) {
      if (!kind.empty()) out.error = kind + ": " + msg;
    };
    client.send(std::move(req), std::move(cb));
    ioc.run();
  } catch (const Error& e) {
    out.error = e.what();
  }
  return out;
}

}  // namespace macserve::loadgen
