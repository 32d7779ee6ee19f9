// Prometheus metrics of the server (prometheus-cpp registry, text exposition format). Names are
// vLLM's with the `macserve:` prefix (serving.md); every metric carries model_name. Request-level
// histograms are fed by the HTTP layer as requests finish; engine gauges and counters are taken
// from EngineStats at scrape time. Per-request series carry frontend="http"|"grpc".
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "macserve/engine/engine.h"
#include "macserve/request/request.h"

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace macserve::metrics {

// Which front end a request came through: the `frontend` label of the per-request series.
enum class Frontend { kHttp, kGrpc };

class ServerMetrics {
 public:
  explicit ServerMetrics(const std::string& model_name);
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // One finished completion (a choice): its final output carries the timings. Thread-safe.
  void on_completion_finished(const engine::RequestOutput& final_output, Frontend frontend);
  // `tokens` tokens arrived `seconds` after the previous ones of the same completion.
  void observe_inter_token(double seconds, int64_t tokens, Frontend frontend);
  // One HTTP response with this status code.
  void on_http_response(int status);

  // Refreshes engine-derived values from `stats` and renders the whole registry.
  std::string render(const engine::EngineStats& stats);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace macserve::metrics
