// The gRPC front end: service macserve.v1.Generation (proto/macserve/v1/generate.proto) over the
// same engine as HTTP, plus grpc.health.v1.Health and server reflection. gRPC headers stay in
// src/ (pimpl): this header is cheap to include.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "macserve/engine/engine.h"
#include "macserve/metrics/metrics.h"
#include "macserve/openai/protocol.h"

namespace macserve::grpc_server {

struct GrpcOptions {
  std::string host = "127.0.0.1";
  int port = 50051;                               // 0: any free port (see GrpcServer::port())
  int64_t max_message_bytes = int64_t{16} << 20;  // largest request and response message
  double keepalive_time = 60.0;     // seconds between server pings on idle connections
  double keepalive_timeout = 20.0;  // seconds a ping may go unanswered before closing
  double min_ping_interval = 10.0;  // clients pinging more often are told to go away
  std::string api_key;              // empty: no auth
  bool access_log = true;           // one info line per Generate call
};

// What GetServerInfo reports about the engine's configuration (filled from EngineConfig).
struct EngineInfo {
  int64_t max_num_seqs = 0;
  int64_t max_num_batched_tokens = 0;
  int64_t max_queued_requests = 0;
  int64_t block_size = 0;
  bool prefix_caching = false;
  std::string attention;  // mac | full
  float mac_threshold = 0.0f;
  int64_t mac_window = 0, mac_band = 0, mac_min_context = 0;
};

// Shared with the HTTP front end: the engine and model are published once loading is done (engine
// last, release order), the drain flag and the count of generations in flight.
struct GrpcServeState {
  GrpcOptions options;
  EngineInfo engine_info;
  std::string version;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  metrics::ServerMetrics* metrics = nullptr;
  const openai::ServedModel* model = nullptr;
  std::atomic<engine::Engine*>* engine = nullptr;
  std::atomic<bool>* draining = nullptr;
  std::atomic<int64_t>* active_generations = nullptr;
};

class GrpcServer {
 public:
  // Binds and starts serving (throws macserve::Error when it cannot). Health is NOT_SERVING until
  // set_serving(true).
  explicit GrpcServer(GrpcServeState& state);
  ~GrpcServer();
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const;
  // grpc.health.v1.Health status of the server ("") and of macserve.v1.Generation.
  void set_serving(bool serving);
  // Stops accepting calls; calls still running after `grace_seconds` are cancelled. Idempotent.
  void stop(double grace_seconds);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace macserve::grpc_server
