// MAC-Attention ring slots through the engine, shared by the CPU test (mac_engine_test.cc) and its
// GPU twin (tests/cuda/cuda_mac_ring_test.cc), on one tiny model with a small window:
// - requests MAC cannot act on (their last decode stays below --mac-min-context) produce the tokens
//   of --attention full and take no ring slot, alone and batched with a request that does use MAC;
// - with the pool exhausted, the sequences left without a slot run exact attention (the tokens of
//   full attention) and are counted as misses;
// - finish and preemption give every slot back (the pool is full again after a storm).
// `bit_exact` (the CPU): the logprobs of plain requests must also equal full attention's bit for
// bit.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "macserve/engine/engine.h"
#include "models/engine_harness.h"

namespace macserve::testing::mac_rings {

struct Gen {
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  engine::MacUsage mac;
  int64_t preemptions = 0;
  std::string error;
};

// Submits every request in one batch (the same step admits all of them, so two engines with the
// same scheduler form the same batches), then drains each stream.
inline std::vector<Gen> run_batch(engine::Engine& eng, const std::vector<engine::Request>& reqs) {
  const auto streams = eng.submit_batch(reqs);
  std::vector<Gen> out;
  for (const auto& s : streams) {
    Gen g;
    engine::RequestOutput o;
    while (s->next(o)) {
      for (const auto& t : o.tokens) g.ids.push_back(t.id), g.logprobs.push_back(t.logprob);
      if (o.finished) g.mac = o.mac, g.preemptions = o.num_preemptions, g.error = o.error;
    }
    out.push_back(std::move(g));
  }
  return out;
}

// Greedy, EOS ignored, the sampled token's logprob reported.
inline engine::Request request(const std::string& id, int prompt_len, int max_tokens, int64_t vocab,
                               uint32_t seed) {
  std::mt19937 rng(seed);
  engine::Request r;
  r.id = id;
  r.prompt_ids.push_back(1);
  for (int j = 1; j < prompt_len; ++j)
    r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
  r.params.temperature = 0.0f;
  r.params.max_tokens = max_tokens;
  r.params.ignore_eos = true;
  r.params.logprobs = 0;
  return r;
}

inline void expect_same_as_full(const Gen& got, const Gen& want, bool bit_exact,
                                const std::string& what) {
  EXPECT_TRUE(got.error.empty()) << what << ": " << got.error;
  EXPECT_EQ(got.ids, want.ids) << what;
  if (bit_exact) {
    EXPECT_EQ(got.logprobs, want.logprobs) << what << ": logprobs differ from full attention";
  }
}

// base: model, device, max_model_len >= 400, MAC window 64.
inline void short_requests_run_plain(engine::EngineConfig base, bool bit_exact) {
  base.mac_min_context = 300;
  base.mac_threshold = 0.0f;  // the widest radius: the long request hits
  for (int64_t chunk :
       {int64_t{2048}, int64_t{48}}) {  // one prefill step; chunked prefill beside decodes
    SCOPED_TRACE(std::string("max_num_batched_tokens ").append(std::to_string(chunk)));
    base.max_num_batched_tokens = chunk;
    engine::EngineConfig full_cfg = base;
    full_cfg.attention = engine::AttentionMode::kFull;
    auto full = engine::Engine::create(full_cfg);
    const int64_t vocab = full->model_config().vocab_size;
    std::vector<engine::Request> reqs;
    for (int i = 0; i < 6; ++i)
      reqs.push_back(
          request(std::string("s").append(std::to_string(i)), 40 + 20 * i, 24, vocab, 11 + i));
    // Last decode at position 320 + 24 - 2 >= 300: this one takes a slot and goes through MAC.
    reqs.push_back(request("long", 320, 24, vocab, 99));
    const auto want = run_batch(*full, reqs);
    engine::EngineConfig mac_cfg = base;
    mac_cfg.attention = engine::AttentionMode::kMac;
    {  // the short ones alone: no ring slot, no MAC work at all
      const std::vector<engine::Request> shorts(reqs.begin(), reqs.end() - 1);
      // Full attention on the same batches: on the GPU a GEMM's bits depend on its row count, so
      // the seven-request run is the reference only where the backend is batch-invariant.
      auto full_alone = engine::Engine::create(full_cfg);
      const auto want_alone = run_batch(*full_alone, shorts);
      auto mac = engine::Engine::create(mac_cfg);
      const auto got = run_batch(*mac, shorts);
      for (std::size_t i = 0; i < shorts.size(); ++i) {
        expect_same_as_full(got[i], want_alone[i], bit_exact,
                            std::string(shorts[i].id).append(" alone"));
        if (bit_exact)
          expect_same_as_full(got[i], want[i], bit_exact,
                              std::string(shorts[i].id).append(" alone, against the batch of 7"));
        EXPECT_EQ(got[i].mac.heads, 0) << shorts[i].id;
      }
      const auto st = settled_stats(*mac);
      EXPECT_GT(st.mac_ring_slots, 0);
      EXPECT_EQ(st.mac_ring_slots_taken, 0);
      EXPECT_EQ(st.mac_ring_slot_misses, 0);
      int64_t heads = 0;
      for (int64_t h : st.mac_layer_heads) heads += h;
      EXPECT_EQ(heads, 0);
    }
    // Beside a request that uses MAC (steps mixing plain rows with MAC rows).
    auto mac = engine::Engine::create(mac_cfg);
    const auto got = run_batch(*mac, reqs);
    for (std::size_t i = 0; i + 1 < reqs.size(); ++i) {
      expect_same_as_full(got[i], want[i], bit_exact,
                          std::string(reqs[i].id).append(" beside a MAC request"));
      EXPECT_EQ(got[i].mac.heads, 0) << reqs[i].id;
    }
    EXPECT_GT(got.back().mac.heads, 0) << "the long request must decode through MAC";
    EXPECT_GT(got.back().mac.hit_heads, 0);
    const auto st = settled_stats(*mac);
    EXPECT_EQ(st.mac_ring_slots_taken, 1);
    EXPECT_EQ(st.mac_ring_slots_in_use, 0);
  }
}

// One ring slot for four requests MAC could act on: the first admitted takes it and hits; the
// others (finishing before it) never get one and must produce full attention's tokens.
inline void exhausted_pool_falls_back_to_exact(engine::EngineConfig base, bool bit_exact) {
  base.mac_min_context = 0;
  base.mac_threshold = 0.0f;
  base.mac_ring_slots = 1;
  engine::EngineConfig full_cfg = base;
  full_cfg.attention = engine::AttentionMode::kFull;
  auto full = engine::Engine::create(full_cfg);
  const int64_t vocab = full->model_config().vocab_size;
  std::vector<engine::Request> reqs{request("holder", 100, 40, vocab, 5)};
  for (int i = 0; i < 3; ++i)
    reqs.push_back(
        request(std::string("miss").append(std::to_string(i)), 60 + 15 * i, 16, vocab, 6 + i));
  const auto want = run_batch(*full, reqs);
  engine::EngineConfig mac_cfg = base;
  mac_cfg.attention = engine::AttentionMode::kMac;
  auto mac = engine::Engine::create(mac_cfg);
  const auto got = run_batch(*mac, reqs);
  EXPECT_GT(got[0].mac.hit_heads, 0) << "the slot holder decodes through MAC";
  for (std::size_t i = 1; i < reqs.size(); ++i) {
    expect_same_as_full(got[i], want[i], bit_exact, reqs[i].id);
    EXPECT_EQ(got[i].mac.heads, 0) << reqs[i].id;
  }
  const auto st = settled_stats(*mac);
  EXPECT_EQ(st.mac_ring_slots, 1);
  EXPECT_EQ(st.mac_ring_slots_taken, 1);
  EXPECT_EQ(st.mac_ring_slot_misses, 3);
  EXPECT_EQ(st.mac_ring_slots_in_use, 0);
}

// A storm of requests through a KV pool that forces preemptions: afterwards every ring slot and
// every KV block is free.
inline void slots_return_after_storm(engine::EngineConfig base) {
  base.attention = engine::AttentionMode::kMac;
  base.mac_min_context = 0;
  base.mac_ring_slots = 4;
  base.kv_cache_tokens = base.max_model_len;  // the smallest pool allowed
  auto eng = engine::Engine::create(base);
  const int64_t vocab = eng->model_config().vocab_size;
  std::vector<engine::Request> reqs;
  for (int i = 0; i < 8; ++i)
    reqs.push_back(
        request(std::string("storm").append(std::to_string(i)), 100 + 9 * i, 24, vocab, 40 + i));
  const auto got = run_batch(*eng, reqs);
  int64_t preempted = 0, mac_heads = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(got[i].error.empty()) << reqs[i].id << ": " << got[i].error;
    EXPECT_EQ(got[i].ids.size(), 24u) << reqs[i].id;
    preempted += got[i].preemptions;
    mac_heads += got[i].mac.heads;
  }
  EXPECT_GT(preempted, 0) << "the storm must preempt";
  EXPECT_GT(mac_heads, 0);
  const auto st = settled_stats(*eng);
  EXPECT_EQ(st.mac_ring_slots, 4);
  EXPECT_EQ(st.mac_ring_slots_in_use, 0) << "ring slots leaked";
  EXPECT_GT(st.mac_ring_slots_taken, 4);
  EXPECT_EQ(st.num_free_blocks, st.num_blocks) << "KV blocks leaked";
}

}  // namespace macserve::testing::mac_rings
