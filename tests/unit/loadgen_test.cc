// macserve-bench's pure parts: statistics against numpy, arrival processes, SSE and HTTP response
// parsing with bytes split anywhere, OpenAI chunk reduction, Prometheus text, result JSON keys.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "macserve/core/error.h"
#include "macserve/loadgen/arrival.h"
#include "macserve/loadgen/backend.h"
#include "macserve/loadgen/http_response_parser.h"
#include "macserve/loadgen/prom_text.h"
#include "macserve/loadgen/result.h"
#include "macserve/loadgen/sse.h"
#include "macserve/loadgen/stats.h"

namespace macserve::loadgen {
namespace {

// ---- statistics -------------------------------------------------------------------------------
TEST(LoadgenStats, PercentilesMeanAndStdMatchNumpy) {
  // Expected values: numpy 2.4 np.percentile / np.mean / np.std on the same list.
  const std::vector<double> v = {0.012, 0.5, 0.031, 0.2, 0.2, 7.5, 0.0042, 1.25, 3.0, 0.9, 0.077};
  EXPECT_DOUBLE_EQ(percentile(v, 0), 0.0042);
  EXPECT_NEAR(percentile(v, 25), 0.054, 1e-12);
  EXPECT_DOUBLE_EQ(percentile(v, 50), 0.2);
  EXPECT_NEAR(percentile(v, 90), 3.0, 1e-12);
  EXPECT_NEAR(percentile(v, 99), 7.050000000000002, 1e-12);
  EXPECT_NEAR(percentile(v, 99.9), 7.455000000000009, 1e-12);
  EXPECT_DOUBLE_EQ(percentile(v, 100), 7.5);
  EXPECT_NEAR(mean(v), 1.243109090909091, 1e-12);
  EXPECT_NEAR(stddev(v), 2.1523988585485245, 1e-12);
  EXPECT_EQ(percentile({}, 99), 0.0);
  EXPECT_EQ(percentile({4.0}, 99), 4.0);
}

RequestRecord ok_record(double start, std::vector<double> chunks, int64_t prompt, int64_t out) {
  RequestRecord r;
  r.success = true;
  r.start_s = start;
  r.chunk_times_s = std::move(chunks);
  r.ttft_s = r.chunk_times_s.front();
  r.latency_s = r.chunk_times_s.back();
  r.prompt_len = prompt;
  r.output_tokens = out;
  return r;
}

TEST(LoadgenStats, MetricsFollowVllmDefinitions) {
  std::vector<RequestRecord> recs;
  recs.push_back(ok_record(0.0, {0.1, 0.2, 0.3, 0.5}, 10, 4));  // TPOT (0.5 - 0.1) / 3
  recs.push_back(ok_record(0.4, {0.3}, 20, 1));                 // one token: no TPOT, no ITL
  RequestRecord bad;
  bad.error_kind = "http_503";
  bad.prompt_len = 7;
  recs.push_back(bad);
  const auto m = compute_metrics(recs, 2.0, {50, 90}, {{"ttft", 200}, {"tpot", 150}}, nullptr);
  EXPECT_EQ(m.completed, 2);
  EXPECT_EQ(m.failed, 1);
  EXPECT_EQ(m.total_input, 30);  // failed requests do not count
  EXPECT_EQ(m.total_output, 5);
  EXPECT_EQ(m.output_lens, (std::vector<int64_t>{4, 1, 0}));
  EXPECT_DOUBLE_EQ(m.request_throughput, 1.0);
  EXPECT_DOUBLE_EQ(m.output_throughput, 2.5);
  EXPECT_DOUBLE_EQ(m.total_token_throughput, 17.5);
  EXPECT_NEAR(m.stats.at("tpot").mean_ms, 400.0 / 3, 1e-9);
  EXPECT_NEAR(m.stats.at("ttft").mean_ms, 200.0, 1e-9);
  EXPECT_NEAR(m.stats.at("itl").median_ms, 100.0, 1e-9);  // gaps 100, 100, 200 ms
  EXPECT_NEAR(m.stats.at("e2el").mean_ms, 400.0, 1e-9);
  // Goodput: request 1 meets both SLOs (TTFT 100 <= 200 ms, TPOT 133 <= 150 ms); request 2 misses
  // the TTFT one (300 > 200 ms).
  EXPECT_DOUBLE_EQ(m.request_goodput, 0.5);
  EXPECT_EQ(m.errors_by_kind.at("http_503"), 1);
  EXPECT_EQ(m.max_concurrent_requests, 2);  // [0, 0.5] and [0.4, 0.7] overlap
  EXPECT_EQ(m.long_context_accuracy, -1);
  // p99 is computed even when not asked for (the result file's p99 keys).
  bool has99 = false;
  for (const auto& [p, v] : m.stats.at("ttft").percentiles_ms) has99 |= p == 99;
  EXPECT_TRUE(has99);
}

TEST(LoadgenStats, OutputTokensFallBackToTokenizingTheText) {
  RequestRecord r = ok_record(0, {0.1, 0.2}, 3, -1);
  r.generated_text = "a b c";
  const auto m = compute_metrics(
      {r}, 1.0, {99}, {}, [](const std::string& t) { return static_cast<int64_t>(t.size()); });
  EXPECT_EQ(m.total_output, 5);
  EXPECT_EQ(m.request_goodput, -1);  // no SLO given
}

TEST(LoadgenStats, FlagParsing) {
  const auto g = parse_goodput({"ttft:500", "tpot:50.5", "e2el:3000"});
  EXPECT_EQ(g.at("ttft"), 500);
  EXPECT_EQ(g.at("tpot"), 50.5);
  EXPECT_THROW(parse_goodput({"ttfx:5"}), Error);
  EXPECT_THROW(parse_goodput({"ttft:abc"}), Error);
  EXPECT_THROW(parse_goodput({"ttft:-1"}), Error);
  EXPECT_EQ(parse_percentiles("50, 90,99.9"), (std::vector<double>{50, 90, 99.9}));
  EXPECT_THROW(parse_percentiles("101"), Error);
  EXPECT_THROW(parse_percentile_metrics("ttft,latency"), Error);
  EXPECT_EQ(percentile_label(99), "99");
  EXPECT_EQ(percentile_label(99.9), "99.9");
  EXPECT_TRUE(std::isinf(parse_rates("1,2.5,inf")[2]));
  EXPECT_THROW(parse_rates("0"), Error);
  EXPECT_THROW(parse_rates("fast"), Error);
  EXPECT_EQ(parse_concurrencies("1,4,16"), (std::vector<int64_t>{1, 4, 16}));
  EXPECT_EQ(parse_concurrencies(""), (std::vector<int64_t>{0}));
  EXPECT_THROW(parse_concurrencies("0"), Error);
}

// ---- arrivals ---------------------------------------------------------------------------------
void expect_gap_stats(double rate, double burstiness) {
  const int64_t n = 20000;
  const auto t = arrival_offsets(n, rate, burstiness, 7);
  ASSERT_EQ(static_cast<int64_t>(t.size()), n);
  EXPECT_EQ(t[0], 0.0);
  std::vector<double> gaps;
  for (int64_t i = 1; i < n; ++i) {
    ASSERT_GE(t[i], t[i - 1]);
    gaps.push_back(t[i] - t[i - 1]);
  }
  const double m = mean(gaps), cv = stddev(gaps) / m;
  // Gamma(k, 1/(rate k)): mean 1/rate, coefficient of variation 1/sqrt(k). With 20000 draws the
  // standard errors are ~0.7% (mean) and ~1-2% (CV).
  EXPECT_NEAR(m * rate, 1.0, 0.03) << "rate " << rate << " burstiness " << burstiness;
  EXPECT_NEAR(cv, 1.0 / std::sqrt(burstiness), 0.05 / std::sqrt(burstiness))
      << "burstiness " << burstiness;
}

TEST(LoadgenArrival, PoissonAndGammaGapsHaveTheRightMeanAndVariation) {
  expect_gap_stats(4.0, 1.0);    // Poisson: CV 1
  expect_gap_stats(16.0, 0.25);  // bursty: CV 2
  expect_gap_stats(2.0, 4.0);    // regular: CV 0.5
}

TEST(LoadgenArrival, SameSeedSameTimesAndInfinityIsAllAtOnce) {
  EXPECT_EQ(arrival_offsets(50, 3.0, 1.0, 1), arrival_offsets(50, 3.0, 1.0, 1));
  EXPECT_NE(arrival_offsets(50, 3.0, 1.0, 1), arrival_offsets(50, 3.0, 1.0, 2));
  for (double t : arrival_offsets(10, kInfiniteRate, 1.0, 0)) EXPECT_EQ(t, 0.0);
  EXPECT_THROW(arrival_offsets(10, 0.0, 1.0, 0), Error);
  EXPECT_THROW(arrival_offsets(10, 1.0, 0.0, 0), Error);
}

// ---- SSE ----------------------------------------------------------------------------------------
std::vector<std::string> sse_events(const std::vector<std::string>& pieces) {
  std::vector<std::string> out;
  SseParser p([&](std::string_view d) { out.emplace_back(d); });
  for (const auto& s : pieces) p.feed(s);
  p.finish();
  return out;
}

TEST(LoadgenSse, EventsSurviveAnySplitOfTheBytes) {
  const std::string stream =
      ": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\ndata: {\"b\":\n"
      "data: 2}\n\nevent: x\nid: 3\ndata:[DONE]\n\n";
  const std::vector<std::string> want = {"{\"a\":1}", "{\"b\":\n2}", "[DONE]"};
  EXPECT_EQ(sse_events({stream}), want);
  for (std::size_t cut = 0; cut <= stream.size(); ++cut)
    EXPECT_EQ(sse_events({stream.substr(0, cut), stream.substr(cut)}), want) << "cut at " << cut;
  std::vector<std::string> bytes;
  for (char c : stream) bytes.emplace_back(1, c);
  EXPECT_EQ(sse_events(bytes), want);
}

TEST(LoadgenSse, UnterminatedLastEventIsDeliveredAtTheEnd) {
  EXPECT_EQ(sse_events({"data: x\n\ndata: tail"}), (std::vector<std::string>{"x", "tail"}));
  EXPECT_TRUE(sse_events({"", ":only a comment\n\n"}).empty());
}

// ---- HTTP responses -------------------------------------------------------------------------
struct Parsed {
  std::string body;
  bool ok = true;
  bool done = false;
  int status = 0;
  bool keep_alive = false;
};

Parsed parse_split(const std::string& wire, std::size_t cut, bool eof = false) {
  Parsed out;
  HttpResponseParser p([&](std::string_view b) { out.body.append(b); });
  out.ok = p.feed(wire.substr(0, cut)) && p.feed(wire.substr(cut));
  if (eof) p.on_eof();
  out.done = p.done();
  out.status = p.status();
  out.keep_alive = p.keep_alive();
  return out;
}

TEST(LoadgenHttp, ChunkedBodyAtEverySplitPoint) {
  const std::string wire =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
      "d\r\ndata: hello\n\n\r\n10;ext=1\r\ndata: [DONE]\n\n\n\n\r\n0\r\nX-Trailer: 1\r\n\r\n";
  for (std::size_t cut = 0; cut <= wire.size(); ++cut) {
    const Parsed p = parse_split(wire, cut);
    ASSERT_TRUE(p.ok) << "cut at " << cut;
    EXPECT_TRUE(p.done);
    EXPECT_EQ(p.status, 200);
    EXPECT_TRUE(p.keep_alive);
    EXPECT_EQ(p.body, "data: hello\n\ndata: [DONE]\n\n\n\n") << "cut at " << cut;
  }
}

TEST(LoadgenHttp, ContentLengthUntilCloseAndErrors) {
  const Parsed a = parse_split(
      "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 5\r\nConnection: close\r\n\r\nbusy!",
      20);
  EXPECT_TRUE(a.done);
  EXPECT_EQ(a.status, 503);
  EXPECT_FALSE(a.keep_alive);
  EXPECT_EQ(a.body, "busy!");
  const Parsed b = parse_split("HTTP/1.0 200 OK\r\n\r\nabc", 5);
  EXPECT_FALSE(b.done);
  EXPECT_EQ(parse_split("HTTP/1.0 200 OK\r\n\r\nabc", 5, true).body, "abc");
  EXPECT_TRUE(parse_split("HTTP/1.0 200 OK\r\n\r\nabc", 5, true).done);
  EXPECT_FALSE(parse_split("SSH-2.0-OpenSSH\r\n\r\n", 3).ok);
  EXPECT_FALSE(parse_split("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 10).ok);
  EXPECT_FALSE(parse_split("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", 10).ok);
  // A 100-continue interim response is skipped.
  const Parsed c = parse_split(
      "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 30);
  EXPECT_EQ(c.status, 200);
  EXPECT_EQ(c.body, "ok");
}

TEST(LoadgenHttp, BaseUrls) {
  const BaseUrl u = parse_base_url("http://10.0.0.2:8123/prefix/");
  EXPECT_EQ(u.host, "10.0.0.2");
  EXPECT_EQ(u.port, 8123);
  EXPECT_EQ(u.path_prefix, "/prefix");
  EXPECT_EQ(parse_base_url("http://localhost").port, 80);
  EXPECT_THROW(parse_base_url("https://x:1"), Error);
  EXPECT_THROW(parse_base_url("http://x:99999"), Error);
  EXPECT_THROW(parse_base_url("http://:80"), Error);
}

// ---- OpenAI chunks -------------------------------------------------------------------------
TEST(LoadgenOpenAi, ChunksReduceToTextUsageAndErrors) {
  OpenAiChunk c;
  ASSERT_TRUE(
      parse_openai_chunk(R"({"choices":[{"index":0,"text":" hi","finish_reason":null}]})", c));
  EXPECT_EQ(c.text, " hi");
  EXPECT_TRUE(c.finish_reason.empty());
  ASSERT_TRUE(parse_openai_chunk(
      R"({"choices":[{"index":0,"delta":{"content":"yo"},"finish_reason":"length"}]})", c));
  EXPECT_EQ(c.text, "yo");
  EXPECT_EQ(c.finish_reason, "length");
  ASSERT_TRUE(parse_openai_chunk(
      R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})", c));
  EXPECT_TRUE(c.text.empty());  // the role chunk is not a token
  ASSERT_TRUE(parse_openai_chunk(
      R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}})", c));
  EXPECT_EQ(c.prompt_tokens, 12);
  EXPECT_EQ(c.completion_tokens, 5);
  ASSERT_TRUE(parse_openai_chunk(R"({"error":{"message":"boom","type":"internal_error"}})", c));
  EXPECT_EQ(c.error, "boom");
  ASSERT_TRUE(parse_openai_chunk("[DONE]", c));
  EXPECT_TRUE(c.is_done);
  EXPECT_FALSE(parse_openai_chunk("{not json", c));
}

// ---- /metrics ----------------------------------------------------------------------------------
TEST(LoadgenProm, SamplesSumOverLabelsAndDeltasGiveRates) {
  const std::string before =
      "# HELP macserve:generation_tokens_total Tokens generated.\n# TYPE "
      "macserve:generation_tokens_total counter\n"
      "macserve:generation_tokens_total{model_name=\"m\"} 100\n"
      "macserve:request_success_total{finished_reason=\"stop\",model_name=\"a}b\"} 3\n"
      "macserve:request_success_total{finished_reason=\"length\",model_name=\"a}b\"} 4\n"
      "macserve:prefix_cache_queries_total{model_name=\"m\"} "
      "10\nmacserve:prefix_cache_hits_total{model_name=\"m\"} 5\n";
  const auto b = parse_prometheus_text(before);
  EXPECT_EQ(b.at("macserve:request_success_total"), 7);
  const auto a = parse_prometheus_text(
      "macserve:generation_tokens_total{model_name=\"m\"} 160\r\nmacserve:request_success_total 9\n"
      "macserve:prefix_cache_queries_total 30\nmacserve:prefix_cache_hits_total "
      "10\nmacserve:mac_heads_total 1e3\n"
      "macserve:mac_hits_total 250\nbroken_line\n");
  const auto d = server_metrics_delta(b, a);
  EXPECT_EQ(d["generation_tokens"].get<double>(), 60);
  EXPECT_EQ(d["request_success"].get<double>(), 2);
  EXPECT_DOUBLE_EQ(d["prefix_cache_hit_rate"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(d["mac_hit_rate"].get<double>(), 0.25);
  EXPECT_TRUE(d["mac_kv_read_fraction"].is_null());  // its denominator did not move
}

// ---- result file --------------------------------------------------------------------------------
TEST(LoadgenResult, JsonHasVllmKeysAndPerRequestRecords) {
  std::vector<RequestRecord> recs = {ok_record(0.0, {0.1, 0.15, 0.3}, 10, 3)};
  recs[0].answer_correct = true;
  RunInfo info;
  info.backend = "openai";
  info.request_rate = kInfiniteRate;
  info.percentile_metrics = {"ttft", "tpot", "itl", "e2el"};
  info.percentiles = {50, 99.9};
  const auto m = compute_metrics(recs, 1.0, info.percentiles, {}, nullptr);
  const auto j = result_json(info, m, recs, nlohmann::ordered_json::object());
  for (const std::string& k : required_result_keys()) EXPECT_TRUE(j.contains(k)) << k;
  EXPECT_EQ(j["request_rate"], "inf");
  EXPECT_TRUE(j.contains("p99.9_itl_ms"));
  EXPECT_TRUE(j.contains("p50_e2el_ms"));
  EXPECT_EQ(j["completed"], 1);
  EXPECT_DOUBLE_EQ(j["long_context_accuracy"].get<double>(), 1.0);
  EXPECT_EQ(j["itls"][0].size(), 2u);
  EXPECT_EQ(j["requests"][0]["token_times"].size(), 3u);
  EXPECT_DOUBLE_EQ(j["mean_ttft_ms"].get<double>(), 100.0);
  const std::string text = text_summary(info, m, nlohmann::ordered_json::object());
  EXPECT_NE(text.find("Successful requests:"), std::string::npos);
  EXPECT_NE(text.find("P99.9 ITL (ms):"), std::string::npos);
  EXPECT_EQ(text.find("P99 ITL (ms):"),
            std::string::npos);  // only the percentiles asked for are printed
}

}  // namespace
}  // namespace macserve::loadgen
