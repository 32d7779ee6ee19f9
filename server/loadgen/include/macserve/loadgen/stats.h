// The numbers of `vllm bench serve`: percentiles with numpy's linear interpolation, population
// standard deviation, TPOT without the first token, goodput against SLOs, peak output rate.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "macserve/loadgen/request_record.h"

namespace macserve::loadgen {

// numpy.percentile(values, p) (method "linear"); 0 for an empty list (vLLM's `or 0`).
double percentile(std::vector<double> values, double p);
double mean(const std::vector<double>& values);
double stddev(const std::vector<double>& values);  // population (numpy's default ddof=0)

// "ttft:500" style SLOs in milliseconds by metric (ttft, tpot, e2el). Throws
// Error(kInvalidArgument).
std::map<std::string, double> parse_goodput(const std::vector<std::string>& specs);
// The items of a comma-separated flag value, blanks trimmed, empty items dropped.
std::vector<std::string> split_csv(const std::string& s);
std::vector<std::string> parse_percentile_metrics(const std::string& csv);  // ttft,tpot,itl,e2el
std::vector<double> parse_percentiles(const std::string& csv);              // "50,90,99"
// "99" -> "99", "99.9" -> "99.9" (the key suffix vLLM writes: p99_ttft_ms, p99.9_ttft_ms).
std::string percentile_label(double p);

struct MetricStats {
  double mean_ms = 0, median_ms = 0, std_ms = 0;
  std::vector<std::pair<double, double>> percentiles_ms;  // (p, value)
};

struct BenchmarkMetrics {
  int64_t completed = 0;
  int64_t failed = 0;
  int64_t total_input = 0;
  int64_t total_output = 0;
  double duration_s = 0;
  double request_throughput = 0;
  double request_goodput = 0;  // -1 when no SLO was given
  double output_throughput = 0;
  double total_token_throughput = 0;
  double max_output_tokens_per_s = 0;  // peak over 1-second windows of token arrivals
  int64_t max_concurrent_requests = 0;
  std::vector<int64_t> output_lens;          // per request, 0 for failed ones (vLLM)
  std::map<std::string, MetricStats> stats;  // "ttft", "tpot", "itl", "e2el"
  std::map<std::string, int64_t> errors_by_kind;
  // long-context: answered / checked (-1 when the dataset has no answers)
  double long_context_accuracy = -1;
  int64_t long_context_checked = 0;
};

// count_tokens: counts the tokens of a reply whose server sent no usage (may be empty: then 0).
BenchmarkMetrics compute_metrics(const std::vector<RequestRecord>& records, double duration_s,
                                 const std::vector<double>& percentiles,
                                 const std::map<std::string, double>& goodput_ms,
                                 const std::function<int64_t(const std::string&)>& count_tokens);

// Per-request TPOT as vLLM defines it: (E2EL - TTFT) / (output tokens - 1), 0 with one token.
double request_tpot(const RequestRecord& r, int64_t output_len);

}  // namespace macserve::loadgen
