// The HTTP/1.1 front end (Boost.Beast on Asio): OpenAI-compatible routes over server/openai,
// streaming as server-sent events, /health, /metrics, limits, timeouts, auth, CORS, drain.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "macserve/engine/engine.h"
#include "macserve/metrics/metrics.h"
#include "macserve/openai/protocol.h"

namespace macserve::http {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;  // 0: any free port (see HttpServer::port())
  int threads = 2;  // I/O threads
  int64_t max_body_bytes = int64_t{8} << 20;
  int64_t max_header_bytes = int64_t{16} << 10;
  double request_timeout = 30.0;          // seconds to receive a whole request once it started
  double write_timeout = 30.0;            // seconds one write may take (a stalled reader)
  double keep_alive_timeout = 60.0;       // idle seconds before a kept-alive connection closes
  int64_t max_connections = 1024;         // beyond: 503 and close
  std::vector<std::string> cors_origins;  // allowed Origins ("*": any); empty: CORS off
  std::string api_key;                    // empty: no auth
  double drain_timeout = 30.0;            // SIGTERM: seconds to let running requests finish
  double health_stall_timeout = 60.0;     // /health fails when the engine loop stalls this long
  bool access_log = true;                 // one info line per request
};

// Shared by every connection. The engine and model fields are published once loading is done
// (engine is stored last, with release order; handlers load it with acquire order).
struct ServeState {
  HttpOptions options;
  std::string version;
  metrics::ServerMetrics* metrics = nullptr;  // set before the server starts
  openai::ServedModel model;
  std::atomic<engine::Engine*> engine{nullptr};
  std::atomic<bool> draining{false};
  // Generations in flight on every front end (the gRPC server counts its calls here too), so the
  // drain waits for all of them.
  std::atomic<int64_t> active_generations{0};
  // Called once when SIGTERM/SIGINT starts the drain (another front end stops taking work).
  std::function<void()> on_drain;
  std::atomic<int64_t> connections{0};
};

class HttpServer {
 public:
  // Binds and listens (throws macserve::Error when it cannot), then serves on I/O threads.
  explicit HttpServer(ServeState& state);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  int port() const;
  // True once SIGTERM or SIGINT arrived (the server then refuses new work).
  bool stop_requested() const;
  // Blocks until SIGTERM/SIGINT, then stops accepting and waits up to drain_timeout for running
  // generations to finish. Returns the number still running when it gave up.
  int64_t wait_and_drain();
  // Closes every connection and joins the I/O threads.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace macserve::http
