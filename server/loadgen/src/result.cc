#include "macserve/loadgen/result.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace macserve::loadgen {
namespace {

nlohmann::ordered_json rate_json(double r) {
  return std::isinf(r) ? nlohmann::ordered_json("inf") : nlohmann::ordered_json(r);
}

const std::map<std::string, std::pair<std::string, std::string>> kMetricTitles = {
    {"ttft", {"Time to First Token", "TTFT"}},
    {"tpot", {"Time per Output Token (excl. 1st token)", "TPOT"}},
    {"itl", {"Inter-token Latency", "ITL"}},
    {"e2el", {"End-to-end Latency", "E2EL"}},
};

std::string line(const std::string& name, const std::string& value) {
  return fmt::format("{:<40} {:<10}\n", name, value);
}
std::string fix2(double v) { return fmt::format("{:.2f}", v); }

std::string centered(const std::string& title, char fill) {
  const std::string& t = title;
  const std::size_t width = 50;
  if (t.size() >= width) return t + "\n";
  const std::size_t left = (width - t.size()) / 2;
  return std::string(left, fill) + t + std::string(width - t.size() - left, fill) + "\n";
}

}  // namespace

const std::vector<std::string>& required_result_keys() {
  static const std::vector<std::string> kKeys = {"date",
                                                 "backend",
                                                 "endpoint_type",
                                                 "label",
                                                 "model_id",
                                                 "tokenizer_id",
                                                 "num_prompts",
                                                 "request_rate",
                                                 "burstiness",
                                                 "max_concurrency",
                                                 "duration",
                                                 "completed",
                                                 "failed",
                                                 "total_input_tokens",
                                                 "total_output_tokens",
                                                 "request_throughput",
                                                 "request_goodput",
                                                 "output_throughput",
                                                 "total_token_throughput",
                                                 "max_output_tokens_per_s",
                                                 "max_concurrent_requests",
                                                 "input_lens",
                                                 "output_lens",
                                                 "ttfts",
                                                 "itls",
                                                 "generated_texts",
                                                 "errors",
                                                 "mean_ttft_ms",
                                                 "median_ttft_ms",
                                                 "std_ttft_ms",
                                                 "p99_ttft_ms",
                                                 "mean_tpot_ms",
                                                 "median_tpot_ms",
                                                 "p99_tpot_ms",
                                                 "mean_itl_ms",
                                                 "median_itl_ms",
                                                 "p99_itl_ms",
                                                 "mean_e2el_ms",
                                                 "median_e2el_ms",
                                                 "p99_e2el_ms",
                                                 "errors_by_kind",
                                                 "long_context_accuracy",
                                                 "server_metrics",
                                                 "requests"};
  return kKeys;
}

nlohmann::ordered_json result_json(const RunInfo& info, const BenchmarkMetrics& m,
                                   const std::vector<RequestRecord>& records,
                                   const nlohmann::ordered_json& server_metrics) {
  using ojson = nlohmann::ordered_json;
  ojson j;
  j["date"] = info.date;
  j["backend"] = info.backend;
  j["endpoint_type"] = info.backend;
  j["endpoint"] = info.endpoint;
  j["base_url"] = info.base_url;
  j["label"] = info.label.empty() ? ojson() : ojson(info.label);
  j["model_id"] = info.model_id;
  j["tokenizer_id"] = info.tokenizer_id;
  j["dataset_name"] = info.dataset_name;
  j["num_prompts"] = info.num_prompts;
  j["request_rate"] = rate_json(info.request_rate);
  j["burstiness"] = info.burstiness;
  j["max_concurrency"] = info.max_concurrency > 0 ? ojson(info.max_concurrency) : ojson();
  for (const auto& [k, v] : info.metadata) j[k] = v;
  j["duration"] = m.duration_s;
  j["completed"] = m.completed;
  j["failed"] = m.failed;
  j["total_input_tokens"] = m.total_input;
  j["total_output_tokens"] = m.total_output;
  j["request_throughput"] = m.request_throughput;
  j["request_goodput"] = m.request_goodput >= 0 ? ojson(m.request_goodput) : ojson();
  j["output_throughput"] = m.output_throughput;
  j["total_token_throughput"] = m.total_token_throughput;
  j["max_output_tokens_per_s"] = m.max_output_tokens_per_s;
  j["max_concurrent_requests"] = m.max_concurrent_requests;
  ojson input_lens = ojson::array(), ttfts = ojson::array(), itls = ojson::array(),
        texts = ojson::array(), errors = ojson::array(), requests = ojson::array();
  for (const RequestRecord& r : records) {
    input_lens.push_back(r.prompt_len);
    ttfts.push_back(r.success ? r.ttft_s : 0.0);
    itls.push_back(r.itls());
    texts.push_back(r.generated_text);
    errors.push_back(r.success ? std::string() : r.error_kind + ": " + r.error);
    ojson q;
    q["index"] = r.sample_index;
    q["success"] = r.success;
    q["error_kind"] = r.error_kind.empty() ? ojson() : ojson(r.error_kind);
    q["start"] = r.start_s;
    q["first_token"] = r.success ? ojson(r.start_s + r.ttft_s) : ojson();
    q["end"] = r.start_s + r.latency_s;
    q["prompt_len"] = r.prompt_len;
    q["max_tokens"] = r.max_tokens;
    q["server_prompt_tokens"] =
        r.server_prompt_tokens >= 0 ? ojson(r.server_prompt_tokens) : ojson();
    q["output_tokens"] = r.output_tokens >= 0 ? ojson(r.output_tokens) : ojson();
    q["finish_reason"] = r.finish_reason.empty() ? ojson() : ojson(r.finish_reason);
    q["token_times"] = r.chunk_times_s;  // every text-bearing chunk, seconds since "start"
    if (r.answer_correct) q["answer_correct"] = *r.answer_correct;
    requests.push_back(std::move(q));
  }
  j["input_lens"] = std::move(input_lens);
  j["output_lens"] = m.output_lens;
  j["ttfts"] = std::move(ttfts);
  j["itls"] = std::move(itls);
  j["generated_texts"] = std::move(texts);
  j["errors"] = std::move(errors);
  for (const char* name : {"ttft", "tpot", "itl", "e2el"}) {
    const MetricStats& s = m.stats.at(name);
    j[fmt::format("mean_{}_ms", name)] = s.mean_ms;
    j[fmt::format("median_{}_ms", name)] = s.median_ms;
    j[fmt::format("std_{}_ms", name)] = s.std_ms;
    for (const auto& [p, v] : s.percentiles_ms)
      j[fmt::format("p{}_{}_ms", percentile_label(p), name)] = v;
  }
  j["errors_by_kind"] = m.errors_by_kind;
  j["long_context_accuracy"] =
      m.long_context_accuracy >= 0 ? ojson(m.long_context_accuracy) : ojson();
  j["long_context_checked"] = m.long_context_checked;
  j["not_sent"] = info.not_sent;
  j["client_cpu_seconds"] = info.client_cpu_s;
  j["server_metrics"] = server_metrics;
  j["requests"] = std::move(requests);
  return j;
}

std::string text_summary(const RunInfo& info, const BenchmarkMetrics& m,
                         const nlohmann::ordered_json& sm) {
  std::string s = centered(" Serving Benchmark Result ", '=');
  s += line("Successful requests:", std::to_string(m.completed));
  s += line("Failed requests:", std::to_string(m.failed));
  if (info.max_concurrency > 0)
    s += line("Maximum request concurrency:", std::to_string(info.max_concurrency));
  s += line("Request rate configured (RPS):",
            std::isinf(info.request_rate) ? "inf" : fix2(info.request_rate));
  s += line("Benchmark duration (s):", fix2(m.duration_s));
  s += line("Total input tokens:", std::to_string(m.total_input));
  s += line("Total generated tokens:", std::to_string(m.total_output));
  s += line("Request throughput (req/s):", fix2(m.request_throughput));
  if (m.request_goodput >= 0) s += line("Request goodput (req/s):", fix2(m.request_goodput));
  s += line("Output token throughput (tok/s):", fix2(m.output_throughput));
  s += line("Peak output token throughput (tok/s):", fix2(m.max_output_tokens_per_s));
  s += line("Peak concurrent requests:", std::to_string(m.max_concurrent_requests));
  s += line("Total Token throughput (tok/s):", fix2(m.total_token_throughput));
  for (const std::string& name : info.percentile_metrics) {
    const auto& [title, abbr] = kMetricTitles.at(name);
    const MetricStats& st = m.stats.at(name);
    s += centered(title, '-');
    s += line(fmt::format("Mean {} (ms):", abbr), fix2(st.mean_ms));
    s += line(fmt::format("Median {} (ms):", abbr), fix2(st.median_ms));
    for (const auto& [p, v] : st.percentiles_ms)
      if (std::find(info.percentiles.begin(), info.percentiles.end(), p) != info.percentiles.end())
        s += line(fmt::format("P{} {} (ms):", percentile_label(p), abbr), fix2(v));
  }
  if (!m.errors_by_kind.empty()) {
    s += centered("Errors", '-');
    for (const auto& [kind, n] : m.errors_by_kind) s += line(kind + ":", std::to_string(n));
  }
  if (m.long_context_accuracy >= 0) {
    s += centered("Long context", '-');
    s += line("Needle answered (accuracy):",
              fmt::format("{:.3f} ({} checked)", m.long_context_accuracy, m.long_context_checked));
  }
  if (sm.is_object() && !sm.empty()) {
    s += centered("Server (/metrics delta)", '-');
    auto num = [&](const char* k, const char* fmtstr) {
      const auto& v = sm[k];
      return v.is_number() ? fmt::format(fmt::runtime(fmtstr), v.get<double>())
                           : std::string("n/a");
    };
    s += line("Generated tokens (server):", num("generation_tokens", "{:.0f}"));
    s += line("Prompt tokens (server):", num("prompt_tokens", "{:.0f}"));
    s += line("Preemptions:", num("preemptions", "{:.0f}"));
    s += line("Prefix cache hit rate:", num("prefix_cache_hit_rate", "{:.3f}"));
    s += line("MAC hit rate:", num("mac_hit_rate", "{:.3f}"));
    s += line("MAC KV bytes read / full:", num("mac_kv_read_fraction", "{:.3f}"));
  }
  s += line("Client CPU time (s):",
            fmt::format("{:.3f} ({:.1f}% of the run)", info.client_cpu_s,
                        m.duration_s > 0 ? 100.0 * info.client_cpu_s / m.duration_s : 0.0));
  s += std::string(50, '=') + "\n";
  return s;
}

}  // namespace macserve::loadgen
