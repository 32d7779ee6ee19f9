// OverheadProbeServer: a loopback HTTP server that answers every POST at once with a canned SSE
// completion stream (`num_chunks` one-word chunks, usage, [DONE]). It is used ONLY by
// `macserve-bench --measure-client-overhead` to measure how many requests and chunks per second the
// client itself sustains; it is not a model server and never stands in for one in tests.
#pragma once

#include <cstdint>
#include <memory>

namespace macserve::loadgen {

class OverheadProbeServer {
 public:
  explicit OverheadProbeServer(int num_chunks);  // listens on 127.0.0.1, a free port, own thread
  ~OverheadProbeServer();
  OverheadProbeServer(const OverheadProbeServer&) = delete;
  OverheadProbeServer& operator=(const OverheadProbeServer&) = delete;
  uint16_t port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace macserve::loadgen
