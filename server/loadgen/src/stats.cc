#include "macserve/loadgen/stats.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "macserve/core/error.h"

namespace macserve::loadgen {

std::vector<double> RequestRecord::itls() const {
  std::vector<double> out;
  for (std::size_t i = 1; i < chunk_times_s.size(); ++i)
    out.push_back(chunk_times_s[i] - chunk_times_s[i - 1]);
  return out;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(std::floor(idx));
  const auto hi = static_cast<std::size_t>(std::ceil(idx));
  return v[lo] + (v[hi] - v[lo]) * (idx - static_cast<double>(lo));
}

double mean(const std::vector<double>& v) {
  if (v.empty()) return 0.0;
  double s = 0;
  for (double x : v) s += x;
  return s / static_cast<double>(v.size());
}

double stddev(const std::vector<double>& v) {
  if (v.empty()) return 0.0;
  const double m = mean(v);
  double s = 0;
  for (double x : v) s += (x - m) * (x - m);
  return std::sqrt(s / static_cast<double>(v.size()));
}

namespace {

double parse_number(const std::string& s, const std::string& what) {
  std::size_t used = 0;
  double v = 0;
  try {
    v = std::stod(s, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != s.size() || !std::isfinite(v))
    throw_error(ErrorCode::kInvalidArgument, "{}: '{}' is not a number", what, s);
  return v;
}

const std::vector<std::string> kMetricNames = {"ttft", "tpot", "itl", "e2el"};

}  // namespace

std::map<std::string, double> parse_goodput(const std::vector<std::string>& specs) {
  std::map<std::string, double> out;
  for (const std::string& spec : specs) {
    for (const std::string& item : split_csv(spec)) {
      const auto colon = item.find(':');
      const std::string name = item.substr(0, colon);
      if (colon == std::string::npos || (name != "ttft" && name != "tpot" && name != "e2el"))
        throw_error(ErrorCode::kInvalidArgument,
                    "--goodput: '{}' is not ttft:MS, tpot:MS or e2el:MS", item);
      const double ms = parse_number(item.substr(colon + 1), "--goodput " + name);
      if (ms < 0)
        throw_error(ErrorCode::kInvalidArgument, "--goodput {}: the SLO must be >= 0 ms", name);
      out[name] = ms;
    }
  }
  return out;
}

std::vector<std::string> parse_percentile_metrics(const std::string& csv) {
  std::vector<std::string> out = split_csv(csv);
  for (const std::string& m : out)
    if (std::find(kMetricNames.begin(), kMetricNames.end(), m) == kMetricNames.end())
      throw_error(ErrorCode::kInvalidArgument,
                  "--percentile-metrics: unknown metric '{}' (ttft, tpot, itl, e2el)", m);
  return out;
}

std::vector<double> parse_percentiles(const std::string& csv) {
  std::vector<double> out;
  for (const std::string& s : split_csv(csv)) {
    const double p = parse_number(s, "--metric-percentiles");
    if (p < 0 || p > 100)
      throw_error(ErrorCode::kInvalidArgument, "--metric-percentiles: {} is outside [0, 100]", s);
    out.push_back(p);
  }
  if (out.empty())
    throw_error(ErrorCode::kInvalidArgument, "--metric-percentiles: no percentile given");
  return out;
}

std::string percentile_label(double p) {
  if (p == std::floor(p)) return std::to_string(static_cast<int64_t>(p));
  std::ostringstream os;
  os << p;
  return os.str();
}

double request_tpot(const RequestRecord& r, int64_t output_len) {
  return output_len > 1 ? (r.latency_s - r.ttft_s) / static_cast<double>(output_len - 1) : 0.0;
}

namespace {

// p99 is always computed (the result file's p99_*_ms keys), whatever else was asked for.
MetricStats stats_of(const std::vector<double>& seconds, std::vector<double> percentiles) {
  if (std::find(percentiles.begin(), percentiles.end(), 99.0) == percentiles.end())
    percentiles.push_back(99.0);
  std::vector<double> ms;
  ms.reserve(seconds.size());
  for (double s : seconds) ms.push_back(s * 1000.0);
  MetricStats st;
  st.mean_ms = mean(ms);
  st.median_ms = percentile(ms, 50);
  st.std_ms = stddev(ms);
  for (double p : percentiles) st.percentiles_ms.emplace_back(p, percentile(ms, p));
  return st;
}

// Peak of requests in flight at once (sweep over start/end events) and of token arrivals in any
// one-second window aligned to the benchmark start (vLLM's per-second buckets).
void peaks(const std::vector<RequestRecord>& records, BenchmarkMetrics& m) {
  std::vector<std::pair<double, int>> events;
  std::map<int64_t, int64_t> tokens_per_second;
  for (const RequestRecord& r : records) {
    if (!r.success) continue;
    events.emplace_back(r.start_s, +1);
    events.emplace_back(r.start_s + r.latency_s, -1);
    for (double t : r.chunk_times_s)
      ++tokens_per_second[static_cast<int64_t>(std::floor(r.start_s + t))];
  }
  std::sort(events.begin(), events.end(), [](const auto& a, const auto& b) {
    return a.first < b.first || (a.first == b.first && a.second < b.second);
  });
  int64_t cur = 0;
  for (const auto& e : events)
    m.max_concurrent_requests = std::max(m.max_concurrent_requests, cur += e.second);
  for (const auto& [sec, n] : tokens_per_second)
    m.max_output_tokens_per_s = std::max(m.max_output_tokens_per_s, static_cast<double>(n));
}

}  // namespace

BenchmarkMetrics compute_metrics(const std::vector<RequestRecord>& records, double duration_s,
                                 const std::vector<double>& percentiles,
                                 const std::map<std::string, double>& goodput_ms,
                                 const std::function<int64_t(const std::string&)>& count_tokens) {
  BenchmarkMetrics m;
  m.duration_s = duration_s;
  std::vector<double> ttfts, tpots, itls, e2els;
  int64_t good = 0;
  int64_t correct = 0;
  for (const RequestRecord& r : records) {
    if (!r.success) {
      ++m.failed;
      ++m.errors_by_kind[r.error_kind.empty() ? "unknown" : r.error_kind];
      m.output_lens.push_back(0);
      continue;
    }
    int64_t out_len = r.output_tokens;
    if (out_len < 0) out_len = count_tokens ? count_tokens(r.generated_text) : 0;
    m.output_lens.push_back(out_len);
    ++m.completed;
    m.total_input += r.prompt_len;
    m.total_output += out_len;
    const double tpot = request_tpot(r, out_len);
    if (out_len > 1) tpots.push_back(tpot);
    for (double x : r.itls()) itls.push_back(x);
    ttfts.push_back(r.ttft_s);
    e2els.push_back(r.latency_s);
    bool ok = true;
    if (auto it = goodput_ms.find("ttft"); it != goodput_ms.end())
      ok &= r.ttft_s * 1000.0 <= it->second;
    if (auto it = goodput_ms.find("tpot"); it != goodput_ms.end())
      ok &= tpot * 1000.0 <= it->second;
    if (auto it = goodput_ms.find("e2el"); it != goodput_ms.end())
      ok &= r.latency_s * 1000.0 <= it->second;
    good += ok;
    if (r.answer_correct) {
      ++m.long_context_checked;
      correct += *r.answer_correct;
    }
  }
  if (m.long_context_checked > 0)
    m.long_context_accuracy =
        static_cast<double>(correct) / static_cast<double>(m.long_context_checked);
  const double d = duration_s > 0 ? duration_s : 1e-9;
  m.request_throughput = static_cast<double>(m.completed) / d;
  m.request_goodput = goodput_ms.empty() ? -1.0 : static_cast<double>(good) / d;
  m.output_throughput = static_cast<double>(m.total_output) / d;
  m.total_token_throughput = static_cast<double>(m.total_input + m.total_output) / d;
  m.stats["ttft"] = stats_of(ttfts, percentiles);
  m.stats["tpot"] = stats_of(tpots, percentiles);
  m.stats["itl"] = stats_of(itls, percentiles);
  m.stats["e2el"] = stats_of(e2els, percentiles);
  peaks(records, m);
  return m;
}

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace macserve::loadgen
