// Drives one load point on the event loop: requests leave at their drawn arrival times (or all at
// once), at most --max-concurrency in flight (a request that arrives at the cap waits for a free
// slot, as in vLLM), optionally cut short by a time limit; a progress line on stderr.
#pragma once

#include <cstdint>
#include <vector>

#include "macserve/loadgen/backend.h"
#include "macserve/loadgen/dataset.h"
#include "macserve/loadgen/request_record.h"

namespace macserve::loadgen {

struct LoadOptions {
  double request_rate = 0;  // requests/s; kInfiniteRate = all at time 0
  double burstiness = 1.0;
  int64_t max_concurrency = 0;  // 0 = no cap
  uint64_t seed = 0;
  double duration_s = 0;  // stop sending after this long; 0 = send every prompt
  bool progress = true;
};

struct RunOutput {
  std::vector<RequestRecord> records;  // the requests that were sent, in dataset order
  double duration_s = 0;               // first send to last completion
  int64_t not_sent = 0;                // prompts left when the time limit hit
  double client_cpu_s = 0;             // CPU time of the event-loop thread during the run
};

RunOutput run_load(boost::asio::io_context& ioc, Backend& backend,
                   const std::vector<SampleRequest>& samples, const LoadOptions& opt);

}  // namespace macserve::loadgen
