// macserve-bench: load-tests an OpenAI-compatible (or macserve gRPC) server with the flags and the
// result file of `vllm bench serve`. One event loop drives every request; see README "Load
// testing".
#include <utility>  // before Asio (Boost 1.74 + g++ 12 in C++20)

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "macserve/core/error.h"
#include "macserve/loadgen/arrival.h"
#include "macserve/loadgen/backend.h"
#include "macserve/loadgen/dataset.h"
#include "macserve/loadgen/overhead_probe.h"
#include "macserve/loadgen/prom_text.h"
#include "macserve/loadgen/result.h"
#include "macserve/loadgen/runner.h"
#include "macserve/loadgen/stats.h"

namespace macserve::loadgen {
namespace {

struct Args {
  BackendOptions backend;
  std::string base_url, host = "127.0.0.1", metrics_url;
  bool port_given = false;
  int port = 8000;
  std::string tokenizer;
  DatasetOptions dataset;
  std::string request_rates = "inf", concurrencies;
  double burstiness = 1.0;
  int64_t num_warmups = 0;
  double duration_s = 0;
  std::string percentile_metrics = "ttft,tpot,itl,e2el", metric_percentiles = "99";
  std::vector<std::string> goodput, metadata;
  bool save_result = false, disable_tqdm = false, no_server_metrics = false;
  std::string result_dir, result_filename, label;
  bool measure_overhead = false;
  int64_t overhead_requests = 4000, overhead_chunks = 16, overhead_concurrency = 64;
};

std::string utc_now(const char* format) {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof(buf), format, &tm);
  return buf;
}

std::vector<std::pair<std::string, std::string>> auth_headers(const Args& a) {
  if (a.backend.api_key.empty()) return {};
  return {{"Authorization", "Bearer " + a.backend.api_key}};
}

// The first model the server lists, when --model is not given.
std::string served_model(const Args& a) {
  const SimpleResponse r = http_fetch(a.backend.url, "GET", "/v1/models", auth_headers(a), "", 30);
  if (!r.error.empty())
    throw_error(ErrorCode::kInvalidArgument, "cannot reach the server at {}: {}", a.base_url,
                r.error);
  if (r.status != 200)
    throw_error(ErrorCode::kInvalidArgument, "GET {}/v1/models answered {}: {}", a.base_url,
                r.status, r.body.substr(0, 300));
  const auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array() || j["data"].empty() ||
      !j["data"][0].contains("id"))
    throw_error(ErrorCode::kInvalidArgument, "GET {}/v1/models: no model listed", a.base_url);
  return j["data"][0]["id"].get<std::string>();
}

std::map<std::string, double> scrape(const Args& a, bool* ok) {
  *ok = false;
  if (a.metrics_url.empty()) return {};
  const SimpleResponse r = http_fetch(parse_base_url(a.metrics_url), "GET", "/metrics", {}, "", 30);
  *ok = r.error.empty() && r.status == 200;
  return *ok ? parse_prometheus_text(r.body) : std::map<std::string, double>{};
}

std::string rate_label(double r) { return std::isinf(r) ? "inf" : fmt::format("{:g}", r); }

std::string result_path(const Args& a, const RunInfo& info, bool sweep) {
  std::string name = a.result_filename;
  const std::string point = fmt::format(
      "c{}-r{}", info.max_concurrency > 0 ? std::to_string(info.max_concurrency) : "none",
      rate_label(info.request_rate));
  if (name.empty()) {
    std::string model = info.model_id;
    for (char& c : model)
      if (c == '/') c = '_';
    name = fmt::format("{}-{}-{}-{}.json", a.backend.name, point, model, info.date);
  } else if (sweep) {
    const auto dot = name.rfind(".json");
    name =
        dot == std::string::npos ? name + "-" + point : name.substr(0, dot) + "-" + point + ".json";
  }
  return (std::filesystem::path(a.result_dir.empty() ? "." : a.result_dir) / name).string();
}

int measure_client_overhead(Args a) {
  OverheadProbeServer probe(static_cast<int>(a.overhead_chunks));
  boost::asio::io_context ioc(1);
  a.backend.name = "openai";
  a.backend.url = BaseUrl{"127.0.0.1", probe.port(), ""};
  a.backend.model = "probe";
  auto backend = make_backend(ioc, a.backend);
  std::vector<SampleRequest> samples(static_cast<std::size_t>(a.overhead_requests),
                                     SampleRequest{"x", 1, a.overhead_chunks, ""});
  LoadOptions lo;
  lo.request_rate = kInfiniteRate;
  lo.max_concurrency = a.overhead_concurrency;
  lo.progress = false;
  run_load(ioc, *backend,
           std::vector<SampleRequest>(
               samples.begin(), samples.begin() + std::min<int64_t>(200, a.overhead_requests)),
           lo);
  const RunOutput out = run_load(ioc, *backend, samples, lo);
  int64_t ok = 0, chunks = 0;
  std::string first_error;
  for (const auto& r : out.records) {
    ok += r.success;
    chunks += static_cast<int64_t>(r.chunk_times_s.size());
    if (!r.success && first_error.empty()) first_error = r.error_kind + ": " + r.error;
  }
  if (!first_error.empty())
    fmt::print(stderr, "macserve-bench: probe request failed: {}\n", first_error);
  fmt::print(
      "Client overhead (loopback SSE probe server answering instantly; not a model server)\n");
  fmt::print("{:<40} {}\n",
             "Requests (ok / sent):", fmt::format("{} / {}", ok, out.records.size()));
  fmt::print("{:<40} {}\n", "Chunks per reply:", a.overhead_chunks);
  fmt::print("{:<40} {}\n", "Max concurrency:", a.overhead_concurrency);
  fmt::print("{:<40} {:.0f}\n", "Requests per second:", static_cast<double>(ok) / out.duration_s);
  fmt::print("{:<40} {:.0f}\n", "Chunks per second:", static_cast<double>(chunks) / out.duration_s);
  fmt::print("{:<40} {:.1f}\n", "Client CPU per request (us):",
             1e6 * out.client_cpu_s / std::max<double>(1, static_cast<double>(ok)));
  fmt::print("{:<40} {:.2f}\n", "Client CPU per chunk (us):",
             1e6 * out.client_cpu_s / std::max<double>(1, static_cast<double>(chunks)));
  return ok == static_cast<int64_t>(out.records.size()) ? 0 : 1;
}

struct SweepRow {
  RunInfo info;
  BenchmarkMetrics m;
};

void print_sweep(const std::vector<SweepRow>& rows) {
  fmt::print("\n{:=^112}\n", " Sweep: throughput vs latency ");
  fmt::print("{:>8} {:>8} {:>6} {:>9} {:>13} {:>13} {:>11} {:>11} {:>11} {:>12}\n", "max_conc",
             "rate", "ok", "req/s", "out tok/s", "tok/s/user", "TTFT p50", "TPOT p50", "ITL p50",
             "E2EL p50");
  for (const SweepRow& r : rows) {
    const double tpot = r.m.stats.at("tpot").median_ms;
    fmt::print(
        "{:>8} {:>8} {:>6} {:>9.2f} {:>13.1f} {:>13.1f} {:>11.1f} {:>11.2f} {:>11.2f} {:>12.1f}\n",
        r.info.max_concurrency > 0 ? std::to_string(r.info.max_concurrency) : "-",
        rate_label(r.info.request_rate), r.m.completed, r.m.request_throughput,
        r.m.output_throughput, tpot > 0 ? 1000.0 / tpot : 0.0, r.m.stats.at("ttft").median_ms, tpot,
        r.m.stats.at("itl").median_ms, r.m.stats.at("e2el").median_ms);
  }
  fmt::print("(out tok/s: one server, one device; tok/s/user = 1000 / median TPOT)\n");
}

int run(Args a) {
  if (a.measure_overhead) return measure_client_overhead(a);
  if (a.backend.api_key.empty())
    if (const char* k = std::getenv("OPENAI_API_KEY")) a.backend.api_key = k;
  const bool grpc = a.backend.name == "grpc";
  if (grpc && !a.port_given && a.base_url.empty()) a.port = 50051;
  if (a.base_url.empty()) a.base_url = fmt::format("http://{}:{}", a.host, a.port);
  if (a.base_url.rfind("grpc://", 0) == 0) a.base_url = "http://" + a.base_url.substr(7);
  a.backend.url = parse_base_url(a.base_url);
  // /metrics lives on the HTTP port: the base URL for the HTTP backends, --metrics-url for gRPC.
  if (a.metrics_url.empty() && !grpc) a.metrics_url = a.base_url;
  if (a.no_server_metrics) a.metrics_url.clear();
  const std::vector<double> rates = parse_rates(a.request_rates);
  const std::vector<int64_t> concs = parse_concurrencies(a.concurrencies);
  RunInfo base;
  base.percentile_metrics = parse_percentile_metrics(a.percentile_metrics);
  base.percentiles = parse_percentiles(a.metric_percentiles);
  base.goodput_ms = parse_goodput(a.goodput);
  for (const std::string& kv : a.metadata) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw_error(ErrorCode::kInvalidArgument, "--metadata {}: expected KEY=VALUE", kv);
    base.metadata[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  if (a.backend.model.empty())
    a.backend.model = grpc ? grpc_model_name(a.backend) : served_model(a);
  std::string tok_path = a.tokenizer;
  if (tok_path.empty() && std::filesystem::exists(a.backend.model)) tok_path = a.backend.model;
  if (tok_path.empty())
    throw_error(
        ErrorCode::kInvalidArgument,
        "--tokenizer PATH is needed to count tokens (the served model's directory, tokenizer.json, "
        "tokenizer.model or .gguf file)");
  const auto tok = load_bench_tokenizer(tok_path);
  fmt::print(stderr, "macserve-bench: building {} prompts of dataset '{}'\n", a.dataset.num_prompts,
             a.dataset.name);
  // Warm-ups get prompts of their own (drawn after the timed ones), so they do not pre-fill the
  // prefix cache with the timed prompts.
  if (a.dataset.num_prompts < 1)
    throw_error(ErrorCode::kInvalidArgument, "--num-prompts must be >= 1");
  if (a.num_warmups < 0) throw_error(ErrorCode::kInvalidArgument, "--num-warmups must be >= 0");
  DatasetOptions dataset = a.dataset;
  dataset.num_prompts += a.num_warmups;
  std::vector<SampleRequest> samples = load_dataset(dataset, *tok);
  const std::vector<SampleRequest> warm(samples.begin() + a.dataset.num_prompts, samples.end());
  samples.resize(static_cast<std::size_t>(a.dataset.num_prompts));

  boost::asio::io_context ioc(1);
  auto backend = make_backend(ioc, a.backend);
  base.backend = a.backend.name;
  base.endpoint = backend->endpoint();
  base.base_url = a.base_url;
  base.model_id = a.backend.model;
  base.tokenizer_id = tok_path;
  base.dataset_name = a.dataset.name;
  base.label = a.label;
  base.num_prompts = static_cast<int64_t>(samples.size());
  base.burstiness = a.burstiness;
  auto count_tokens = [&](const std::string& text) {
    return static_cast<int64_t>(tok->encode(text, false).size());
  };
  std::vector<SweepRow> rows;
  const bool sweep = rates.size() * concs.size() > 1;
  bool all_failed = true;
  for (int64_t conc : concs) {
    for (double rate : rates) {
      RunInfo info = base;
      info.request_rate = rate;
      info.max_concurrency = conc;
      info.date = utc_now("%Y%m%d-%H%M%S");
      LoadOptions lo;
      lo.max_concurrency = conc;
      lo.seed = a.dataset.seed;
      lo.progress = !a.disable_tqdm;
      if (a.num_warmups > 0) {
        fmt::print(stderr, "macserve-bench: {} warm-up requests\n", a.num_warmups);
        LoadOptions wo = lo;
        wo.request_rate = kInfiniteRate;
        wo.progress = false;
        const RunOutput w = run_load(ioc, *backend, warm, wo);
        for (const auto& r : w.records)
          if (!r.success)
            throw_error(ErrorCode::kInvalidArgument, "warm-up request failed: {}: {}", r.error_kind,
                        r.error);
      }
      bool before_ok = false, after_ok = false;
      const auto before = scrape(a, &before_ok);
      lo.request_rate = rate;
      lo.burstiness = a.burstiness;
      lo.duration_s = a.duration_s;
      fmt::print(stderr,
                 "macserve-bench: {} requests, rate {}, max concurrency {}, endpoint {}{}\n",
                 samples.size(), rate_label(rate), conc > 0 ? std::to_string(conc) : "none",
                 a.base_url, backend->endpoint());
      const RunOutput out = run_load(ioc, *backend, samples, lo);
      const auto after = scrape(a, &after_ok);
      const nlohmann::ordered_json sm = before_ok && after_ok ? server_metrics_delta(before, after)
                                                              : nlohmann::ordered_json::object();
      info.client_cpu_s = out.client_cpu_s;
      info.not_sent = out.not_sent;
      const BenchmarkMetrics m = compute_metrics(out.records, out.duration_s, info.percentiles,
                                                 info.goodput_ms, count_tokens);
      all_failed &= m.completed == 0;
      std::fputs(text_summary(info, m, sm).c_str(), stdout);
      std::fflush(stdout);
      if (a.save_result) {
        const std::string path = result_path(a, info, sweep);
        if (!a.result_dir.empty()) std::filesystem::create_directories(a.result_dir);
        std::ofstream f(path);
        f << result_json(info, m, out.records, sm).dump(2) << "\n";
        if (!f) throw_error(ErrorCode::kInvalidArgument, "cannot write the result file {}", path);
        fmt::print(stderr, "macserve-bench: wrote {}\n", path);
      }
      rows.push_back({info, m});
    }
  }
  if (sweep) print_sweep(rows);
  if (all_failed) {
    fmt::print(stderr, "macserve-bench: no request succeeded (first error: {})\n",
               rows.empty() || rows[0].m.errors_by_kind.empty()
                   ? "none"
                   : rows[0].m.errors_by_kind.begin()->first);
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace macserve::loadgen

namespace {

int run(int argc, char** argv) {
  using macserve::loadgen::Args;
  Args a;
  CLI::App app{
      "macserve-bench: serving benchmark with the flags and result file of `vllm bench serve`"};
  app.add_option("--backend", a.backend.name,
                 "openai (/v1/completions), openai-chat (/v1/chat/completions), grpc")
      ->capture_default_str();
  app.add_option("--base-url", a.base_url,
                 "server URL, e.g. http://127.0.0.1:8000 (else --host/--port)");
  app.add_option("--host", a.host)->capture_default_str();
  app.add_option("--port", a.port, "default 8000 (grpc: 50051)")->capture_default_str();
  app.add_option("--endpoint", a.backend.endpoint,
                 "request path (default by backend); grpc: text or chat");
  app.add_option("--metrics-url", a.metrics_url,
                 "server whose /metrics to scrape (default: --base-url; grpc: none)");
  app.add_option("--model", a.backend.model,
                 "served model name (default: the first of /v1/models)");
  app.add_option("--tokenizer", a.tokenizer,
                 "the served model's directory, tokenizer.json/.model or .gguf");
  app.add_option("--api-key", a.backend.api_key, "bearer key (default: $OPENAI_API_KEY)");
  app.add_option("--dataset-name", a.dataset.name,
                 "random, sharegpt, custom, prefix-repetition, long-context")
      ->capture_default_str();
  app.add_option("--dataset-path", a.dataset.path,
                 "sharegpt JSON, custom JSONL, or long-context haystack text");
  app.add_option("--num-prompts", a.dataset.num_prompts)->capture_default_str();
  app.add_option("--seed", a.dataset.seed)->capture_default_str();
  app.add_option("--random-input-len", a.dataset.random_input_len)->capture_default_str();
  app.add_option("--random-output-len", a.dataset.random_output_len)->capture_default_str();
  app.add_option("--random-range-ratio", a.dataset.random_range_ratio)->capture_default_str();
  app.add_option("--random-prefix-len", a.dataset.random_prefix_len)->capture_default_str();
  app.add_option("--sharegpt-output-len", a.dataset.sharegpt_output_len,
                 "fixed output length (default: the reply's)");
  app.add_option("--custom-output-len", a.dataset.custom_output_len)->capture_default_str();
  app.add_option("--prefix-repetition-prefix-len", a.dataset.prefix_repetition_prefix_len)
      ->capture_default_str();
  app.add_option("--prefix-repetition-suffix-len", a.dataset.prefix_repetition_suffix_len)
      ->capture_default_str();
  app.add_option("--prefix-repetition-num-prefixes", a.dataset.prefix_repetition_num_prefixes)
      ->capture_default_str();
  app.add_option("--prefix-repetition-output-len", a.dataset.prefix_repetition_output_len)
      ->capture_default_str();
  app.add_option("--long-context-input-len", a.dataset.long_context_input_len)
      ->capture_default_str();
  app.add_option("--long-context-output-len", a.dataset.long_context_output_len)
      ->capture_default_str();
  app.add_option("--long-context-depth", a.dataset.long_context_depth,
                 "needle depth in [0, 1] (default: random)");
  app.add_option("--request-rate", a.request_rates,
                 "requests/s (Poisson), inf, or a list for a sweep")
      ->capture_default_str();
  app.add_option("--burstiness", a.burstiness, "gamma shape of inter-arrival gaps (1 = Poisson)")
      ->capture_default_str();
  app.add_option("--max-concurrency", a.concurrencies,
                 "cap on requests in flight, or a list for a sweep");
  app.add_flag("--ignore-eos", a.backend.ignore_eos, "ask for exactly the output length");
  app.add_option("--temperature", a.backend.temperature)->capture_default_str();
  app.add_option("--num-warmups", a.num_warmups, "untimed requests before each point")
      ->capture_default_str();
  app.add_option("--duration", a.duration_s, "stop sending after this many seconds (0 = no limit)")
      ->capture_default_str();
  app.add_option("--request-timeout", a.backend.timeout_s, "seconds per request (0 = none)")
      ->capture_default_str();
  app.add_option("--percentile-metrics", a.percentile_metrics)->capture_default_str();
  app.add_option("--metric-percentiles", a.metric_percentiles)->capture_default_str();
  app.add_option("--goodput", a.goodput, "SLOs: ttft:MS tpot:MS e2el:MS")->expected(1, 3);
  app.add_flag("--save-result", a.save_result, "write the result JSON");
  app.add_option("--result-dir", a.result_dir);
  app.add_option("--result-filename", a.result_filename);
  app.add_option("--label", a.label);
  app.add_option("--metadata", a.metadata, "KEY=VALUE pairs stored in the result")->expected(1, 64);
  app.add_flag("--disable-tqdm", a.disable_tqdm, "no progress output");
  app.add_flag("--no-server-metrics", a.no_server_metrics,
               "do not scrape /metrics before and after");
  app.add_flag(
      "--measure-client-overhead", a.measure_overhead,
      "measure this client's own req/s against a built-in loopback SSE probe server, then exit");
  app.add_option("--overhead-requests", a.overhead_requests)->capture_default_str();
  app.add_option("--overhead-chunks", a.overhead_chunks)->capture_default_str();
  app.add_option("--overhead-concurrency", a.overhead_concurrency)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  a.port_given = app.count("--port") > 0;
  try {
    return macserve::loadgen::run(a);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "macserve-bench: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (...) {  // what run's own handlers leave: CLI set-up, allocation failures
    std::fputs("macserve-bench: internal error during start-up\n", stderr);
    return 2;
  }
}
