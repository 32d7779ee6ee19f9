// The result of one load point: vLLM's console block and its result JSON keys (so files compare
// line by line with `vllm bench serve --save-result`), plus per-request records and the server's
// /metrics deltas.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "macserve/loadgen/request_record.h"
#include "macserve/loadgen/stats.h"

namespace macserve::loadgen {

struct RunInfo {
  std::string date;  // "%Y%m%d-%H%M%S" UTC
  std::string backend;
  std::string endpoint;
  std::string base_url;
  std::string model_id;
  std::string tokenizer_id;
  std::string dataset_name;
  std::string label;
  int64_t num_prompts = 0;
  double request_rate = 0;  // inf allowed
  double burstiness = 1.0;
  int64_t max_concurrency = 0;  // 0 = none
  std::vector<std::string> percentile_metrics;
  std::vector<double> percentiles;
  std::map<std::string, double> goodput_ms;
  std::map<std::string, std::string> metadata;  // --metadata k=v
  double client_cpu_s = 0;
  int64_t not_sent = 0;
};

nlohmann::ordered_json result_json(const RunInfo& info, const BenchmarkMetrics& m,
                                   const std::vector<RequestRecord>& records,
                                   const nlohmann::ordered_json& server_metrics);

std::string text_summary(const RunInfo& info, const BenchmarkMetrics& m,
                         const nlohmann::ordered_json& server_metrics);

// The keys every result file has (a test checks them).
const std::vector<std::string>& required_result_keys();

}  // namespace macserve::loadgen
