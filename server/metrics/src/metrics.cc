#include "macserve/metrics/metrics.h"

#include <array>
#include <map>
#include <numeric>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

namespace macserve::metrics {
namespace {

using prometheus::Counter;
using prometheus::Gauge;
using prometheus::Histogram;
using Labels = std::map<std::string, std::string>;

// Latency buckets (seconds), as vLLM's.
const Histogram::BucketBoundaries kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08,
                                                  0.1,   0.25,  0.5,  0.75, 1.0,  2.5,  5.0,
                                                  7.5,   10.0,  20.0, 40.0, 80.0};
const Histogram::BucketBoundaries kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                                 0.3,  0.4,   0.5,  0.75,  1.0, 2.5,  5.0,
                                                 7.5,  10.0,  20.0, 40.0,  80.0};
constexpr std::size_t kNumFrontends = 2;
const char* frontend_name(Frontend f) {
  switch (f) {
    case Frontend::kHttp:
      return "http";
    case Frontend::kGrpc:
      return "grpc";
  }
  return "http";
}
std::size_t frontend_index(Frontend f) { return f == Frontend::kGrpc ? 1 : 0; }

const Histogram::BucketBoundaries kRequestBuckets = {
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0};

}  // namespace

struct ServerMetrics::Impl {
  explicit Impl(const std::string& model) : labels{{"model_name", model}} {}

  Counter& counter(const std::string& name, const std::string& help, Labels extra = {}) {
    auto& family = prometheus::BuildCounter().Name(name).Help(help).Register(*registry);
    extra.insert(labels.begin(), labels.end());
    return family.Add(extra);
  }
  Gauge& gauge(const std::string& name, const std::string& help) {
    return prometheus::BuildGauge().Name(name).Help(help).Register(*registry).Add(labels);
  }
  Histogram& histogram(const std::string& name, const std::string& help,
                       const Histogram::BucketBoundaries& b) {
    return prometheus::BuildHistogram().Name(name).Help(help).Register(*registry).Add(labels, b);
  }
  // One series per front end.
  using PerFrontend = std::array<Histogram*, kNumFrontends>;
  PerFrontend per_frontend(const std::string& name, const std::string& help,
                           const Histogram::BucketBoundaries& b) {
    auto& family = prometheus::BuildHistogram().Name(name).Help(help).Register(*registry);
    PerFrontend out{};
    for (Frontend f : {Frontend::kHttp, Frontend::kGrpc}) {
      Labels l = labels;
      l["frontend"] = frontend_name(f);
      out[frontend_index(f)] = &family.Add(l, b);
    }
    return out;
  }
  // Engine counters are cumulative in EngineStats; the registry's counters advance by the delta.
  void advance(Counter& c, int64_t total) {
    const auto key = &c;
    const int64_t prev = last_seen[key];
    if (total > prev) c.Increment(static_cast<double>(total - prev));
    last_seen[key] = std::max(prev, total);
  }

  std::mutex mu;
  Labels labels;
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::map<const Counter*, int64_t> last_seen;

  Gauge *running = nullptr, *waiting = nullptr, *kv_usage = nullptr, *kv_blocks = nullptr,
        *mac_ring_bytes = nullptr;
  Gauge *mac_ring_slots = nullptr, *mac_ring_slots_in_use = nullptr;
  Counter *mac_ring_taken = nullptr, *mac_ring_misses = nullptr;
  Counter *prompt_tokens = nullptr, *generation_tokens = nullptr, *preemptions = nullptr;
  Counter *prefix_queries = nullptr, *prefix_hits = nullptr, *steps = nullptr;
  Counter *mac_heads = nullptr, *mac_eligible = nullptr, *mac_hits = nullptr, *mac_read = nullptr,
          *mac_full = nullptr, *mac_all_hit = nullptr, *mac_mixed = nullptr,
          *mac_all_miss = nullptr;
  Histogram* mac_audit = nullptr;
  std::vector<int64_t> mac_audit_seen;
  double mac_audit_sum_seen = 0.0;
  PerFrontend ttft{}, itl{}, e2e{}, queue{}, prefill{}, prompt_hist{}, generation_hist{};
  std::map<std::string, std::array<Counter*, kNumFrontends>> success;
  prometheus::Family<Counter>* http_family = nullptr;
  std::map<int, Counter*> http;
};

ServerMetrics::ServerMetrics(const std::string& model_name)
    : impl_(std::make_unique<Impl>(model_name)) {
  Impl& m = *impl_;
  m.running = &m.gauge("macserve:num_requests_running",
                       "Requests (completions) being processed by the engine.");
  m.waiting =
      &m.gauge("macserve:num_requests_waiting", "Requests (completions) waiting to be scheduled.");
  m.kv_usage =
      &m.gauge("macserve:kv_cache_usage_perc", "Fraction of KV-cache blocks in use (1 = full).");
  m.kv_blocks = &m.gauge("macserve:kv_cache_num_blocks", "KV-cache blocks in the pool.");
  m.mac_ring_bytes = &m.gauge("macserve:mac_ring_bytes", "Bytes of MAC-Attention ring state.");
  m.mac_ring_slots = &m.gauge("macserve:mac_ring_slots", "MAC-Attention ring slots in the pool.");
  m.mac_ring_slots_in_use =
      &m.gauge("macserve:mac_ring_slots_in_use", "MAC-Attention ring slots held by sequences.");
  m.mac_ring_taken =
      &m.counter("macserve:mac_ring_slots_taken_total", "MAC-Attention ring slots handed out.");
  m.mac_ring_misses =
      &m.counter("macserve:mac_ring_slot_misses_total",
                 "Sequences that needed a MAC ring slot and found none free (exact attention).");
  m.prompt_tokens = &m.counter("macserve:prompt_tokens_total", "Prompt tokens prefilled.");
  m.generation_tokens = &m.counter("macserve:generation_tokens_total", "Tokens generated.");
  m.preemptions = &m.counter("macserve:num_preemptions_total", "Preemptions (by recompute).");
  m.prefix_queries = &m.counter("macserve:prefix_cache_queries_total",
                                "Full prompt blocks looked up in the prefix cache.");
  m.prefix_hits =
      &m.counter("macserve:prefix_cache_hits_total", "Prompt blocks found in the prefix cache.");
  m.steps = &m.counter("macserve:engine_steps_total", "Engine iterations that ran the model.");
  m.mac_heads = &m.counter("macserve:mac_heads_total",
                           "MAC-Attention (layer, query head) decisions in decode steps.");
  m.mac_eligible =
      &m.counter("macserve:mac_eligible_heads_total", "MAC decisions where matching was allowed.");
  m.mac_hits = &m.counter("macserve:mac_hits_total",
                          "MAC decisions that reused a cached attention summary.");
  m.mac_read = &m.counter("macserve:mac_kv_bytes_read_total", "K/V bytes read by MAC-Attention.");
  m.mac_full = &m.counter("macserve:mac_kv_bytes_full_equivalent_total",
                          "K/V bytes full attention would have read for the same steps.");
  const std::string groups_help = "MAC (layer, KV group) pairs by outcome.";
  auto& groups = prometheus::BuildCounter()
                     .Name("macserve:mac_kv_groups_total")
                     .Help(groups_help)
                     .Register(*m.registry);
  auto group = [&](const char* outcome) -> Counter& {
    Labels l = m.labels;
    l["outcome"] = outcome;
    return groups.Add(l);
  };
  m.mac_all_hit = &group("all_hit");
  m.mac_mixed = &group("mixed");
  m.mac_all_miss = &group("all_miss");
  m.ttft =
      m.per_frontend("macserve:time_to_first_token_seconds", "Time to first token.", kTtftBuckets);
  m.itl = m.per_frontend("macserve:inter_token_latency_seconds", "Time between output tokens.",
                         kItlBuckets);
  m.e2e = m.per_frontend("macserve:e2e_request_latency_seconds",
                         "Arrival to finish, per completion.", kRequestBuckets);
  m.queue = m.per_frontend("macserve:request_queue_time_seconds", "Arrival to first scheduled.",
                           kRequestBuckets);
  m.prefill = m.per_frontend("macserve:request_prefill_time_seconds",
                             "First scheduled to first token.", kRequestBuckets);
  const Histogram::BucketBoundaries tokens = {1,   2,    5,    10,   20,    50,    100,   200,
                                              500, 1000, 2000, 5000, 10000, 20000, 50000, 100000};
  m.prompt_hist =
      m.per_frontend("macserve:request_prompt_tokens", "Prompt tokens per completion.", tokens);
  m.generation_hist = m.per_frontend("macserve:request_generation_tokens",
                                     "Generated tokens per completion.", tokens);
  auto& success = prometheus::BuildCounter()
                      .Name("macserve:request_success_total")
                      .Help("Completions finished, by finish reason.")
                      .Register(*m.registry);
  for (const char* reason : {"stop", "length", "abort", "error"}) {
    for (Frontend f : {Frontend::kHttp, Frontend::kGrpc}) {
      Labels l = m.labels;
      l["finished_reason"] = reason;
      l["frontend"] = frontend_name(f);
      m.success[reason][frontend_index(f)] = &success.Add(l);
    }
  }
  auto& http = prometheus::BuildCounter()
                   .Name("macserve:http_responses_total")
                   .Help("HTTP responses by status code.")
                   .Register(*m.registry);
  m.http_family = &http;
  for (int code : {200, 204, 400, 401, 404, 405, 408, 413, 429, 431, 500, 503}) {
    Labels l = m.labels;
    l["status"] = std::to_string(code);
    m.http[code] = &http.Add(l);
  }
}

ServerMetrics::~ServerMetrics() = default;

void ServerMetrics::on_completion_finished(const engine::RequestOutput& out, Frontend frontend) {
  Impl& m = *impl_;
  const std::size_t f = frontend_index(frontend);
  std::lock_guard lock(m.mu);
  const char* reason = engine::to_string(out.finish_reason);
  if (auto it = m.success.find(reason); it != m.success.end()) it->second[f]->Increment();
  if (out.finish_reason == engine::FinishReason::kError ||
      out.finish_reason == engine::FinishReason::kAbort)
    return;
  if (out.completion_tokens > 0) m.ttft[f]->Observe(out.time_to_first_token);
  m.e2e[f]->Observe(out.total_time);
  m.queue[f]->Observe(out.queue_time);
  if (out.completion_tokens > 0) m.prefill[f]->Observe(out.prefill_time);
  m.prompt_hist[f]->Observe(static_cast<double>(out.prompt_tokens));
  m.generation_hist[f]->Observe(static_cast<double>(out.completion_tokens));
}

void ServerMetrics::observe_inter_token(double seconds, int64_t tokens, Frontend frontend) {
  if (tokens <= 0) return;
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  const double each = seconds / static_cast<double>(tokens);
  for (int64_t i = 0; i < tokens; ++i) m.itl[frontend_index(frontend)]->Observe(each);
}

void ServerMetrics::on_http_response(int status) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  auto it = m.http.find(status);
  if (it == m.http.end()) {
    Labels l = m.labels;
    l["status"] = std::to_string(status);
    it = m.http.emplace(status, &m.http_family->Add(l)).first;
  }
  it->second->Increment();
}

std::string ServerMetrics::render(const engine::EngineStats& s) {
  Impl& m = *impl_;
  std::lock_guard lock(m.mu);
  m.running->Set(static_cast<double>(s.num_running));
  m.waiting->Set(static_cast<double>(s.num_waiting));
  m.kv_usage->Set(s.kv_cache_usage());
  m.kv_blocks->Set(static_cast<double>(s.num_blocks));
  m.mac_ring_bytes->Set(static_cast<double>(s.mac_ring_bytes));
  m.mac_ring_slots->Set(static_cast<double>(s.mac_ring_slots));
  m.mac_ring_slots_in_use->Set(static_cast<double>(s.mac_ring_slots_in_use));
  m.advance(*m.mac_ring_taken, s.mac_ring_slots_taken);
  m.advance(*m.mac_ring_misses, s.mac_ring_slot_misses);
  m.advance(*m.prompt_tokens, s.prompt_tokens);
  m.advance(*m.generation_tokens, s.generation_tokens);
  m.advance(*m.preemptions, s.num_preemptions);
  m.advance(*m.prefix_queries, s.prefix_cache_queries);
  m.advance(*m.prefix_hits, s.prefix_cache_hits);
  m.advance(*m.steps, s.num_steps);
  const auto sum = [](const std::vector<int64_t>& v) {
    return std::accumulate(v.begin(), v.end(), int64_t{0});
  };
  m.advance(*m.mac_heads, sum(s.mac_layer_heads));
  m.advance(*m.mac_eligible, sum(s.mac_layer_eligible));
  m.advance(*m.mac_hits, sum(s.mac_layer_hits));
  m.advance(*m.mac_read, s.mac_kv_bytes_read);
  m.advance(*m.mac_full, s.mac_kv_bytes_full);
  m.advance(*m.mac_all_hit, s.mac_groups_all_hit);
  m.advance(*m.mac_mixed, s.mac_groups_mixed);
  m.advance(*m.mac_all_miss, s.mac_groups_all_miss);
  // The audit histogram (its buckets are the engine's): add the counts seen since the last scrape.
  if (m.mac_audit == nullptr && !s.mac_audit_bucket_bounds.empty())
    m.mac_audit = &m.histogram(
        "macserve:mac_audit_relative_error",
        "Relative L2 error of MAC-Attention outputs against exact attention, per audited step.",
        s.mac_audit_bucket_bounds);
  if (m.mac_audit != nullptr &&
      s.mac_audit_bucket_counts.size() == s.mac_audit_bucket_bounds.size() + 1) {
    m.mac_audit_seen.resize(s.mac_audit_bucket_counts.size(), 0);
    std::vector<double> inc(s.mac_audit_bucket_counts.size());
    bool any = false;
    for (std::size_t i = 0; i < inc.size(); ++i) {
      inc[i] = static_cast<double>(s.mac_audit_bucket_counts[i] - m.mac_audit_seen[i]);
      any = any || inc[i] > 0;
    }
    if (any) {
      m.mac_audit->ObserveMultiple(inc, s.mac_audit_sum - m.mac_audit_sum_seen);
      m.mac_audit_seen = s.mac_audit_bucket_counts;
      m.mac_audit_sum_seen = s.mac_audit_sum;
    }
  }
  return prometheus::TextSerializer().Serialize(m.registry->Collect());
}

}  // namespace macserve::metrics
