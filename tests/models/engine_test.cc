// The engine on a tiny real model: batched equals alone (also under heavy preemption and with
// chunked prefill at several chunk sizes), prefix caching, cancellation, seeds across batch
// compositions, n > 1, back-pressure, stop strings, deadlines, and no leaked blocks afterwards;
// all of it with async scheduling off and on. Deterministic mode (--deterministic): the same token
// ids and logprob bits alone, in batches, under every chunk budget and from the prefix cache, with
// full attention and MAC (models/determinism_checks.h, shared with the GPU test).
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "macserve/engine/engine.h"
#include "models/determinism_checks.h"
#include "models/engine_harness.h"
#include "test_paths.h"

namespace macserve::testing {
namespace {

using engine::AutoOnOff;
using engine::Engine;
using engine::EngineConfig;
using engine::FinishReason;
using engine::Request;
using engine::RequestOutput;

std::string model_dir() { return models_dir() + "/tiny-llama-sp"; }

using Result = StreamResult;

// Every test runs with async scheduling off, on, and on with greedy sampling by the backend's
// argmax (the parameter); the one-at-a-time references are computed with both off, so the others
// must reproduce synchronous, CPU-sampled outputs exactly.
std::string async_mode = "off";

EngineConfig base_config() {
  EngineConfig c;
  c.model_path = model_dir();
  c.async_scheduling = async_mode == "off" ? AutoOnOff::kOff : AutoOnOff::kOn;
  c.device_sampling = async_mode == "on_device_greedy" ? AutoOnOff::kOn : AutoOnOff::kOff;
  c.max_model_len = 256;
  c.kv_cache_tokens = 8192;
  return c;
}

std::vector<Request> random_requests(int n, uint32_t seed, int64_t vocab) {
  std::mt19937 rng(seed);
  std::vector<Request> reqs;
  for (int i = 0; i < n; ++i) {
    Request r;
    r.id = "r" + std::to_string(i);
    const int len = 1 + static_cast<int>(rng() % 90);
    r.prompt_ids.push_back(1);  // BOS
    for (int j = 1; j < len; ++j)
      r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
    r.params.temperature = 0.0f;
    r.params.max_tokens = 1 + static_cast<int>(rng() % 40);
    reqs.push_back(std::move(r));
  }
  return reqs;
}

void expect_idle(Engine& eng) {
  const auto st = settled_stats(eng);
  EXPECT_EQ(st.num_running, 0);
  EXPECT_EQ(st.num_waiting, 0);
  EXPECT_EQ(st.num_free_blocks, st.num_blocks) << "KV blocks leaked";
}

class EngineTest : public ::testing::TestWithParam<const char*> {
 protected:
  // The 64 requests and their results run one at a time, computed once for the suite.
  static void SetUpTestSuite() {
    if (!exists(model_dir())) return;
    async_mode = "off";
    auto eng = Engine::create(base_config());
    reqs_ = random_requests(64, 11, eng->model_config().vocab_size);
    for (const Request& r : reqs_) alone_.push_back(collect(eng->submit(r)));
    expect_idle(*eng);
  }
  void SetUp() override {
    if (!exists(model_dir())) GTEST_SKIP() << "test model not found: " << model_dir();
    async_mode = GetParam();
  }
  static inline std::vector<Request> reqs_;
  static inline std::vector<Result> alone_;
};

TEST_P(EngineTest, BatchedEqualsAloneAcrossPoolSizesAndChunkSizes) {
  struct Case {
    const char* name;
    int64_t kv_tokens;
    int64_t chunk;
    int64_t max_seqs;
    bool prefix;
  };
  for (const Case& c :
       {Case{"default", 8192, 2048, 64, true}, Case{"tiny pool", 272, 2048, 64, false},
        Case{"chunk 7", 8192, 7, 64, true}, Case{"chunk 32 + tiny pool", 300, 32, 16, true},
        Case{"chunk 1", 8192, 1, 8, false}}) {
    SCOPED_TRACE(c.name);
    EngineConfig cfg = base_config();
    cfg.kv_cache_tokens = c.kv_tokens;
    cfg.max_num_batched_tokens = c.chunk;
    cfg.max_num_seqs = c.max_seqs;
    cfg.enable_prefix_caching = c.prefix;
    auto eng = Engine::create(cfg);
    const auto batched = run_all(*eng, reqs_);
    for (std::size_t i = 0; i < reqs_.size(); ++i) {
      EXPECT_EQ(batched[i].ids, alone_[i].ids) << reqs_[i].id;
      EXPECT_EQ(batched[i].text, alone_[i].text) << reqs_[i].id;
      EXPECT_EQ(batched[i].reason, alone_[i].reason) << reqs_[i].id;
    }
    if (c.kv_tokens < 1000) {
      EXPECT_GT(eng->stats().num_preemptions, 5) << "the small pool should preempt";
    }
    expect_idle(*eng);
  }
}

TEST_P(EngineTest, RepeatedPromptHitsThePrefixCache) {
  auto eng = Engine::create(base_config());
  Request r = reqs_[0];
  r.prompt_ids.resize(1);
  for (int i = 0; i < 70; ++i) r.prompt_ids.push_back(100 + i);
  const Result first = collect(eng->submit(r));
  const Result second = collect(eng->submit(r));
  EXPECT_EQ(first.ids, second.ids);
  EXPECT_EQ(first.cached, 0);
  EXPECT_EQ(second.cached, 64);  // 4 full blocks of 16; the rest is recomputed
  EXPECT_EQ(eng->stats().prefix_cache_hits, 4);
  expect_idle(*eng);
}

TEST_P(EngineTest, CancellingAtRandomMomentsFreesEverything) {
  EngineConfig cfg = base_config();
  cfg.max_model_len = 1024;
  auto eng = Engine::create(cfg);
  std::mt19937 rng(5);
  std::vector<std::shared_ptr<engine::ResponseStream>> streams;
  std::vector<int> cancel_after;
  for (const Request& r : reqs_) {
    Request long_req = r;
    long_req.params.max_tokens = 600;  // none can finish before it is cancelled
    long_req.params.ignore_eos = true;
    streams.push_back(eng->submit(long_req));
    cancel_after.push_back(static_cast<int>(rng() % 8));
    if (cancel_after.back() == 0) streams.back()->cancel();  // cancelled while still queued
  }
  int aborted = 0;
  for (std::size_t i = 0; i < streams.size(); ++i) {
    RequestOutput out;
    int seen = 0;
    FinishReason reason = FinishReason::kNone;
    while (streams[i]->next(out)) {
      if (++seen == cancel_after[i]) streams[i]->cancel();
      if (out.finished) reason = out.finish_reason;
    }
    EXPECT_LE(seen, std::max(cancel_after[i], 1) + 64)
        << "request " << i << " ran on after its cancel";
    aborted += reason == FinishReason::kAbort;
  }
  EXPECT_EQ(aborted, 64);
  expect_idle(*eng);
}

TEST_P(EngineTest, SeededSamplingIgnoresBatchComposition) {
  Request r = reqs_[3];
  r.params.temperature = 1.0f;
  r.params.top_p = 0.9f;
  r.params.seed = 1234;
  r.params.max_tokens = 30;
  r.params.ignore_eos = true;
  auto eng = Engine::create(base_config());
  const Result alone = collect(eng->submit(r));
  std::vector<Request> mix(reqs_.begin(), reqs_.begin() + 20);
  mix.insert(mix.begin() + 7, r);
  const auto batched = run_all(*eng, mix);
  EXPECT_EQ(batched[7].ids, alone.ids);
  Request other = r;
  other.params.seed = 99;
  EXPECT_NE(collect(eng->submit(other)).ids, alone.ids);
  expect_idle(*eng);
}

TEST_P(EngineTest, NGreaterThanOneSharesThePromptAndMatchesAlone) {
  auto eng = Engine::create(base_config());
  Request r = reqs_[5];
  r.params.max_tokens = 12;
  r.params.ignore_eos = true;
  r.prompt_ids.resize(1);
  for (int i = 0; i < 50; ++i) r.prompt_ids.push_back(200 + i);
  const Result alone = collect(eng->submit(r));
  r.n = 3;
  auto stream = eng->submit(r);
  std::vector<std::vector<int32_t>> per(3);
  RequestOutput out;
  int finished = 0;
  while (stream->next(out)) {
    for (const auto& t : out.tokens) per[static_cast<std::size_t>(out.index)].push_back(t.id);
    finished += out.finished;
  }
  EXPECT_EQ(finished, 3);
  for (const auto& ids : per) EXPECT_EQ(ids, alone.ids);
  EXPECT_GE(eng->stats().prefix_cache_hits, 3 * 3);  // siblings reuse the prompt's full blocks
  expect_idle(*eng);
}

TEST_P(EngineTest, QueueLimitRejectsAtOnce) {
  EngineConfig cfg = base_config();
  cfg.max_queued_requests = 2;
  cfg.max_num_seqs = 1;
  auto eng = Engine::create(cfg);
  std::vector<std::shared_ptr<engine::ResponseStream>> streams;
  for (int i = 0; i < 6; ++i) {
    Request r = reqs_[static_cast<std::size_t>(i)];
    r.params.max_tokens = 100;
    r.params.ignore_eos = true;
    streams.push_back(eng->submit(r));
  }
  int rejected = 0;
  for (auto& s : streams) {
    const Result res = collect(s);
    if (res.reason == FinishReason::kError) {
      EXPECT_NE(res.error.find("too many queued requests"), std::string::npos);
      ++rejected;
    }
  }
  EXPECT_GE(rejected, 2);
  EXPECT_LE(rejected, 4);
  expect_idle(*eng);
}

TEST_P(EngineTest, StopStringsCutTheOutputAndEndWithStop) {
  auto eng = Engine::create(base_config());
  Request r = reqs_[9];
  r.params.max_tokens = 40;
  r.params.ignore_eos = true;
  const Result full = collect(eng->submit(r));
  ASSERT_GT(full.text.size(), 12u);
  const std::string stop = full.text.substr(6, 3);
  r.params.stop = {stop};
  const Result cut = collect(eng->submit(r));
  EXPECT_EQ(cut.reason, FinishReason::kStop);
  EXPECT_EQ(cut.text, full.text.substr(0, full.text.find(stop)));
  EXPECT_EQ(full.reason, FinishReason::kLength);
  expect_idle(*eng);
}

TEST_P(EngineTest, BadRequestsFailCleanlyAndDeadlinesAbort) {
  auto eng = Engine::create(base_config());
  Request r = reqs_[0];
  r.prompt_ids = {1, 999999};
  EXPECT_EQ(collect(eng->submit(r)).reason, FinishReason::kError);
  r = reqs_[0];
  r.params.max_tokens = 1000;  // over the 256-token context
  const Result too_long = collect(eng->submit(r));
  EXPECT_EQ(too_long.reason, FinishReason::kError);
  EXPECT_NE(too_long.error.find("context length"), std::string::npos);
  r = reqs_[0];
  r.params.top_p = 2.0f;
  EXPECT_EQ(collect(eng->submit(r)).reason, FinishReason::kError);
  r = reqs_[0];
  r.prompt_ids.clear();
  EXPECT_EQ(collect(eng->submit(r)).reason, FinishReason::kError);
  r = reqs_[0];
  r.prompt_ids.resize(std::min<std::size_t>(r.prompt_ids.size(), 20));
  r.params.max_tokens = 200;
  r.params.ignore_eos = true;
  r.deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
  const Result late = collect(eng->submit(r));
  EXPECT_EQ(late.reason, FinishReason::kAbort);
  EXPECT_LT(late.ids.size(), 200u);
  expect_idle(*eng);
}

TEST_P(EngineTest, SubmitBatchMatchesAloneAndFailsOnlyTheBadRequest) {
  EngineConfig cfg = base_config();
  cfg.max_queued_requests = 40;
  auto eng = Engine::create(cfg);
  std::vector<Request> batch(reqs_.begin(), reqs_.begin() + 12);
  Request bad = reqs_[12];
  bad.prompt_ids.push_back(eng->model_config().vocab_size);  // outside the vocabulary
  batch.insert(batch.begin() + 5, bad);
  const auto streams = eng->submit_batch(batch);
  ASSERT_EQ(streams.size(), batch.size());
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const Result got = collect(streams[i]);
    if (i == 5) {
      EXPECT_EQ(got.reason, FinishReason::kError);
      EXPECT_NE(got.error.find("outside the vocabulary"), std::string::npos) << got.error;
      continue;
    }
    const std::size_t k = i < 5 ? i : i - 1;
    EXPECT_EQ(got.ids, alone_[k].ids) << reqs_[k].id;
    EXPECT_EQ(got.reason, alone_[k].reason) << reqs_[k].id;
  }
  // The queue limit applies request by request inside a batch: 50 one-completion requests against
  // a limit of 40 queued sequences leave some rejected with "queue", never a crash or a hang.
  std::vector<Request> many(reqs_.begin(), reqs_.begin() + 50);
  int rejected = 0;
  for (const auto& s : eng->submit_batch(many)) {
    const Result r = collect(s);
    if (r.reason == FinishReason::kError) {
      EXPECT_NE(r.error.find("queue"), std::string::npos) << r.error;
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 0);
  EXPECT_TRUE(eng->submit_batch({}).empty());
  expect_idle(*eng);
}

// Deterministic mode on the CPU, whose backend is batch-invariant by design; the GPU twin is
// tests/cuda/cuda_determinism_test.cc.
EngineConfig deterministic_config(const std::string& attention) {
  return determinism::small_model_config(model_dir(), attention);
}

// Parameter: the attention mode.
class DeterministicEngine : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!exists(model_dir())) GTEST_SKIP() << "test model not found: " << model_dir();
  }
};

TEST_P(DeterministicEngine, AloneBatchedChunkedAndCachedGiveTheSameBits) {
  determinism::check_invariance(deterministic_config(GetParam()), determinism::Plan{});
}

// MACSERVE_CPU_GEMM=openblas is a benchmark switch whose bits depend on the shapes; under
// --deterministic the engine keeps the invariant kernel, so the outputs have its bits.
TEST(DeterministicEngineCpu, OpenblasSwitchIsIgnored) {
  if (!exists(model_dir())) GTEST_SKIP() << "test model not found: " << model_dir();
  EngineConfig c = deterministic_config("full");
  auto invariant = Engine::create(c);
  c.cpu_gemm = engine::CpuGemm::kOpenblas;
  auto blas = Engine::create(c);
  c.deterministic = true;
  auto ignored = Engine::create(c);
  determinism::Plan plan;
  plan.target_max_tokens = 8;
  int64_t blas_differs = 0;
  for (const Request& r : determinism::make_targets(plan, determinism::prompt_vocab(*invariant))) {
    const auto want = determinism::run_alone(*invariant, r);
    determinism::expect_identical(determinism::run_alone(*ignored, r), want, r.id);
    blas_differs += determinism::diff(determinism::run_alone(*blas, r), want).logprobs;
  }
  EXPECT_GT(blas_differs, 0) << "OpenBLAS should change some bits, or this test shows nothing";
}

// The embedded default model (SmolLM2-135M, Q4_1 weights multiplied in their blocks), with fewer
// and shorter requests than the tiny model: 30 layers of width 576 on two CPU cores.
TEST(DeterministicEngineCpu, SmolLM2GivesTheSameBits) {
  MACSERVE_REQUIRE_PATH(default_model_path());
  EngineConfig c = deterministic_config("full");
  c.model_path = default_model_path();
  determinism::Plan plan;
  plan.num_targets = 1;
  plan.target_prompt_min = 270;
  plan.target_prompt_max = 290;
  plan.target_max_tokens = 8;
  plan.neighbour_prompt_max = 40;
  plan.neighbour_max_tokens = 8;
  plan.long_neighbour_every = 0;
  plan.batch_sizes = {1, 7};
  determinism::check_invariance(c, plan);
}

INSTANTIATE_TEST_SUITE_P(Attention, DeterministicEngine, ::testing::Values("full", "mac"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param);
                         });

INSTANTIATE_TEST_SUITE_P(AsyncScheduling, EngineTest,
                         ::testing::Values("off", "on", "on_device_greedy"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param);
                         });

}  // namespace
}  // namespace macserve::testing
