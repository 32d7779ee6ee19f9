// A small HTTP/1.1 client on one Asio event loop: keep-alive connection pool (TCP_NODELAY), the
// request written in one piece, the response parsed as it arrives (Content-Length, chunked, or
// until close), body bytes handed over with the time their read completed. No thread per request;
// every callback runs on the io_context's thread. Only what a load client needs: no TLS, no
// redirects, no compression.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace macserve::loadgen {

using Clock = std::chrono::steady_clock;

// "http://host:port/prefix" -> parts. Throws Error(kInvalidArgument) for other schemes / bad ports.
struct BaseUrl {
  std::string host;
  uint16_t port = 80;
  std::string path_prefix;  // without a trailing '/'
};
BaseUrl parse_base_url(const std::string& url);

struct HttpRequest {
  std::string method = "POST";
  std::string path;  // request target, "/v1/completions"
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  double timeout_s = 0;  // whole exchange; 0 = none
};

struct HttpCallbacks {
  std::function<void(int status)> on_status;  // status line and headers read
  std::function<void(std::string_view bytes, Clock::time_point t)>
      on_body;  // body bytes (de-chunked)
  // error_kind "" on success, else "connect", "timeout", "disconnect", "protocol"; then nothing
  // more.
  std::function<void(const std::string& error_kind, const std::string& message)> on_done;
};

class HttpClient {
 public:
  HttpClient(boost::asio::io_context& ioc, const std::string& host, uint16_t port);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends on an idle pooled connection or a new one; a request that fails on a reused connection
  // before any response byte (the server closed it while idle) is retried once on a new one.
  void send(HttpRequest request, HttpCallbacks callbacks);
  int64_t num_connections_opened() const;
  void close_idle();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// Blocking GET or POST for setup and scraping (/metrics, /v1/models), on its own event loop.
struct SimpleResponse {
  int status = 0;
  std::string body;
  std::string error;  // transport error; empty when a response came
};
SimpleResponse http_fetch(const BaseUrl& url, const std::string& method, const std::string& path,
                          const std::vector<std::pair<std::string, std::string>>& headers,
                          const std::string& body, double timeout_s);

}  // namespace macserve::loadgen
