// Deterministic mode (--deterministic, issue 25), shared by the CPU test (engine_test.cc) and its
// GPU twin (tests/cuda/cuda_determinism_test.cc). A few target requests (prompts longer than 256
// tokens; greedy ones and one seeded sampled one; each token's logprob and top alternatives
// reported) must give the token ids and the logprob bits they give alone, one at a time:
// - inside batches of 1, 2, 7 and 64 requests, at varied places, beside random neighbours;
// - alone and in a batch of 64 under every prefill chunk budget (max_num_batched_tokens);
// - with their prefix taken from the prefix cache: the same prompt again, a prompt that extends an
//   earlier request's prompt with part of its output (a longer cached prefix, partly written by
//   decode steps), and a prompt that shares half an earlier one and goes on with new tokens. Under
//   MAC-Attention this holds because deterministic mode stops a hit before the first ring row
//   (MacRingPolicy::deterministic; a prefill builds no ring row for a cached position).
// With full attention, the extended prompt's outputs must also equal the rest of the earlier
// request's: a row computed by a prefill has the bits of the same row computed by a decode step.
// (Not under MAC: there the earlier request's ring rows of its output came from decode steps, the
// extended prompt's from its prefill, and MAC builds the two kinds differently.)
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "macserve/engine/engine.h"

namespace macserve::testing::determinism {

// One completion as the client sees it.
struct Trace {
  std::vector<engine::GeneratedToken> tokens;  // id, logprob and top alternatives of each token
  int64_t cached = 0;                          // prompt tokens served from the prefix cache
  int64_t mac_hit_heads = 0;
  std::string error;
};

// Where two traces part: positions whose token id differs, and positions whose logprob or any top
// alternative (token or logprob) differs in any bit. A missing position counts in both.
struct Diff {
  int64_t tokens = 0;
  int64_t logprobs = 0;
  int64_t first = -1;
  int64_t compared = 0;
  bool same() const { return tokens == 0 && logprobs == 0; }
};

inline bool same_bits(float a, float b) {
  return std::bit_cast<uint32_t>(a) == std::bit_cast<uint32_t>(b);
}

inline bool same_token(const engine::GeneratedToken& a, const engine::GeneratedToken& b) {
  if (!same_bits(a.logprob, b.logprob) || a.top.size() != b.top.size()) return false;
  for (std::size_t k = 0; k < a.top.size(); ++k)
    if (a.top[k].token != b.top[k].token || !same_bits(a.top[k].logprob, b.top[k].logprob))
      return false;
  return true;
}

inline Diff diff(const Trace& got, const Trace& want) {
  Diff d;
  const std::size_t n = std::max(got.tokens.size(), want.tokens.size());
  d.compared = static_cast<int64_t>(n);
  for (std::size_t i = 0; i < n; ++i) {
    const bool both = i < got.tokens.size() && i < want.tokens.size();
    const bool id_differs = !both || got.tokens[i].id != want.tokens[i].id;
    const bool lp_differs = !both || !same_token(got.tokens[i], want.tokens[i]);
    d.tokens += id_differs;
    d.logprobs += lp_differs;
    if ((id_differs || lp_differs) && d.first < 0) d.first = static_cast<int64_t>(i);
  }
  return d;
}

inline void expect_identical(const Trace& got, const Trace& want, const std::string& what) {
  EXPECT_TRUE(got.error.empty()) << what << ": " << got.error;
  const Diff d = diff(got, want);
  EXPECT_TRUE(d.same()) << what << ": of " << d.compared << " tokens, " << d.tokens
                        << " differ in their id and " << d.logprobs
                        << " in their logprob bits, the first at " << d.first;
}

// Submits every request in one batch (the step that admits any of them admits all), then drains
// each stream; completions of n > 1 are not used here.
inline std::vector<Trace> run_batch(engine::Engine& eng, const std::vector<engine::Request>& reqs) {
  const auto streams = eng.submit_batch(reqs);
  std::vector<Trace> out;
  for (const auto& s : streams) {
    Trace t;
    engine::RequestOutput o;
    while (s->next(o)) {
      t.tokens.insert(t.tokens.end(), o.tokens.begin(), o.tokens.end());
      if (o.finished) t.cached = o.cached_prompt_tokens, t.mac_hit_heads = o.mac.hit_heads;
      if (!o.error.empty()) t.error = o.error;
    }
    out.push_back(std::move(t));
  }
  return out;
}

inline Trace run_alone(engine::Engine& eng, const engine::Request& r) {
  return run_batch(eng, {r}).front();
}

// The engine settings of the checks on the small models (the tiny ones, SmolLM2): a context of
// 1024 and a KV pool for 64 requests of the default plan, MAC scaled to short contexts so that
// decodes hit (as in mac_engine_test.cc). Device: the CPU unless the caller sets another.
inline engine::EngineConfig small_model_config(const std::string& model_path,
                                               const std::string& attention) {
  engine::EngineConfig c;
  c.model_path = model_path;
  c.max_model_len = 1024;
  c.kv_cache_tokens = 16384;
  c.attention = engine::parse_enum<engine::AttentionMode>(attention, "--attention");
  c.mac_window = 64;
  c.mac_band = 16;
  c.mac_min_context = 0;
  c.mac_threshold = 0.2f;
  return c;
}

// The sizes of the scenarios; the defaults fit the tiny models on two CPU cores.
struct Plan {
  int num_targets = 3;          // the last one sampled with a seed, the others greedy
  int target_prompt_min = 300;  // > 256: the 256-token budget splits every target's prefill
  int target_prompt_max = 560;
  int target_max_tokens = 24;
  int neighbour_prompt_max = 100;
  int long_neighbour_every = 8;  // one neighbour in this many is as long as a target (0: none)
  int neighbour_max_tokens = 24;
  std::vector<int> batch_sizes{1, 2, 7, 64};
  std::vector<int64_t> chunks{256, 2048, 8192};
  int64_t reference_chunk = 2048;
  uint32_t seed = 7;
};

inline std::vector<int32_t> random_prompt(std::mt19937& rng, int len, int32_t vocab) {
  std::vector<int32_t> ids{1};  // BOS on Llama-style models, an ordinary token elsewhere
  for (int j = 1; j < len; ++j) ids.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
  return ids;
}

inline std::vector<engine::Request> make_targets(const Plan& plan, int32_t vocab) {
  std::mt19937 rng(plan.seed);
  std::vector<engine::Request> out;
  for (int i = 0; i < plan.num_targets; ++i) {
    engine::Request r;
    r.id = "target" + std::to_string(i);
    const int span = plan.target_prompt_max - plan.target_prompt_min + 1;
    r.prompt_ids =
        random_prompt(rng, plan.target_prompt_min + static_cast<int>(rng() % span), vocab);
    r.params.temperature = 0.0f;
    r.params.max_tokens = plan.target_max_tokens;
    r.params.ignore_eos = true;  // a fixed length: every position is compared
    r.params.logprobs = 3;
    if (i == plan.num_targets - 1 && i > 0) {
      r.params.temperature = 0.8f;
      r.params.top_p = 0.95f;
      r.params.seed = 1000 + static_cast<uint64_t>(i);
    }
    out.push_back(std::move(r));
  }
  return out;
}

// Random neighbours: prompt and output lengths, greedy or sampled (seeded or not), with or without
// logprobs, stopping at EOS or not.
inline std::vector<engine::Request> make_neighbours(const Plan& plan, int n, int32_t vocab,
                                                    uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<engine::Request> out;
  for (int i = 0; i < n; ++i) {
    engine::Request r;
    r.id = "neighbour" + std::to_string(i);
    const bool is_long = plan.long_neighbour_every > 0 && rng() % plan.long_neighbour_every == 0;
    const int len = is_long ? plan.target_prompt_min + static_cast<int>(rng() % 200)
                            : 1 + static_cast<int>(rng() % plan.neighbour_prompt_max);
    r.prompt_ids = random_prompt(rng, len, vocab);
    r.params.max_tokens = 1 + static_cast<int>(rng() % plan.neighbour_max_tokens);
    r.params.temperature = rng() % 2 == 0 ? 0.0f : 1.0f;
    if (rng() % 2 == 0) r.params.seed = rng();
    r.params.logprobs = rng() % 3 == 0 ? 2 : -1;
    r.params.ignore_eos = rng() % 2 == 0;
    out.push_back(std::move(r));
  }
  return out;
}

// The vocabulary prompts draw from: the model's, bounded by the tokenizer's (outputs are
// detokenized).
inline int32_t prompt_vocab(const engine::Engine& eng) {
  return static_cast<int32_t>(
      std::min<int64_t>(eng.model_config().vocab_size, eng.tokenizer().vocab_size()));
}

// Every target inside batches of each size: max(1, size / 16) targets per batch at random places,
// the rest random neighbours.
inline void check_batches(engine::Engine& eng, const std::vector<engine::Request>& targets,
                          const std::vector<Trace>& want, const Plan& plan,
                          const std::vector<int>& sizes, const std::string& where) {
  const int32_t vocab = prompt_vocab(eng);
  const int num_targets = static_cast<int>(targets.size());
  for (int size : sizes) {
    const int per = std::min(num_targets, std::max(1, size / 16));
    for (int first = 0; first < num_targets; first += per) {
      const int group = std::min(per, num_targets - first);
      const uint32_t seed = plan.seed * 7919u + static_cast<uint32_t>(size * 131 + first);
      std::vector<engine::Request> batch = make_neighbours(plan, size - group, vocab, seed);
      std::vector<int> places(static_cast<std::size_t>(size));
      std::iota(places.begin(), places.end(), 0);
      std::mt19937 rng(seed);
      std::shuffle(places.begin(), places.end(), rng);
      places.resize(static_cast<std::size_t>(group));
      std::sort(places.begin(), places.end());
      for (std::size_t k = 0; k < places.size(); ++k)
        batch.insert(batch.begin() + places[k], targets[static_cast<std::size_t>(first) + k]);
      const auto got = run_batch(eng, batch);
      for (std::size_t k = 0; k < places.size(); ++k) {
        const auto place = static_cast<std::size_t>(places[k]);
        const std::size_t t = static_cast<std::size_t>(first) + k;
        expect_identical(got[place], want[t],
                         where + ", batch of " + std::to_string(size) + ", " + targets[t].id +
                             " at place " + std::to_string(place));
      }
    }
  }
}

// The prefix-cache scenarios in `cache` (prefix caching on); references computed in `plain`
// (prefix caching off, the same chunk budget).
inline void check_prefix_cache(engine::Engine& cache, engine::Engine& plain,
                               const std::vector<engine::Request>& targets,
                               const std::vector<Trace>& want, bool mac, int64_t mac_window,
                               int64_t block_size) {
  const int32_t vocab = prompt_vocab(cache);
  std::mt19937 rng(99);
  for (std::size_t i = 0; i < targets.size(); ++i) {
    const engine::Request& t = targets[i];
    const std::string id = t.id;
    expect_identical(run_alone(cache, t), want[i], id + ", first run with prefix caching on");
    const Trace again = run_alone(cache, t);
    EXPECT_GT(again.cached, 0) << id << ": the repeated prompt must hit the prefix cache";
    expect_identical(again, want[i], id + ", repeated prompt from the prefix cache");
    // The prompt and the first half of the output: the cached prefix goes past the prompt, over
    // blocks whose K/V decode steps wrote (under MAC it stops a ring window earlier).
    const std::size_t k = want[i].tokens.size() / 2;
    engine::Request ext = t;
    ext.id = id + "+output";
    for (std::size_t j = 0; j < k; ++j) ext.prompt_ids.push_back(want[i].tokens[j].id);
    ext.params.max_tokens -= static_cast<int32_t>(k);
    const Trace got = run_alone(cache, ext);
    const int64_t prompt_blocks = static_cast<int64_t>(t.prompt_ids.size()) / block_size;
    const bool new_block =
        (static_cast<int64_t>(ext.prompt_ids.size()) - 1) / block_size > prompt_blocks;
    EXPECT_GT(got.cached, mac || !new_block ? 0 : prompt_blocks * block_size)
        << id << ": the cached prefix must reach into the earlier output";
    expect_identical(got, run_alone(plain, ext), ext.id + ", cached against uncached");
    if (!mac && t.params.is_greedy()) {  // a seeded draw depends on the token's index
      Trace rest;
      rest.tokens.assign(want[i].tokens.begin() + static_cast<std::ptrdiff_t>(k),
                         want[i].tokens.end());
      expect_identical(got, rest, ext.id + ", against the rest of the earlier output");
    }
    // Half the prompt, then new tokens, more than a ring window of them: the hit is all of the
    // shared blocks, in either attention mode.
    engine::Request half = t;
    half.id = id + "/half";
    half.prompt_ids.resize(t.prompt_ids.size() / 2);
    const int64_t tail = (mac ? mac_window : 0) + 2 * block_size + 40;
    for (int64_t j = 0; j < tail; ++j)
      half.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
    const Trace got_half = run_alone(cache, half);
    EXPECT_EQ(got_half.cached,
              static_cast<int64_t>(t.prompt_ids.size()) / 2 / block_size * block_size)
        << half.id << ": the shared blocks must come from the prefix cache";
    expect_identical(got_half, run_alone(plain, half), half.id + ", cached against uncached");
  }
}

// The scenarios of the header comment. base: model, device, attention and MAC settings, a context
// of at least 1024 and a KV pool for 64 requests of the plan; deterministic mode is set here.
inline void check_invariance(engine::EngineConfig base, const Plan& plan) {
  base.deterministic = true;
  base.max_num_seqs = std::max<int64_t>(base.max_num_seqs, 64);
  const bool mac = base.attention == engine::AttentionMode::kMac;
  auto make = [&base](int64_t chunk, bool prefix_caching) {
    engine::EngineConfig c = base;
    c.max_num_batched_tokens = chunk;
    c.enable_prefix_caching = prefix_caching;
    return engine::Engine::create(c);
  };
  auto plain = make(plan.reference_chunk, false);
  const auto targets = make_targets(plan, prompt_vocab(*plain));
  std::vector<Trace> want;
  int64_t hits = 0;
  for (const auto& t : targets) {
    want.push_back(run_alone(*plain, t));
    const Trace& w = want.back();
    ASSERT_TRUE(w.error.empty()) << t.id << ": " << w.error;
    ASSERT_EQ(w.tokens.size(), static_cast<std::size_t>(plan.target_max_tokens)) << t.id;
    ASSERT_EQ(w.tokens.front().top.size(), 3u) << t.id << ": logprobs must be reported";
    hits += w.mac_hit_heads;
  }
  if (mac) {
    EXPECT_GT(hits, 0) << "MAC must hit for the check to cover its decode path";
  }
  const std::string ref = "chunk " + std::to_string(plan.reference_chunk);
  check_batches(*plain, targets, want, plan, plan.batch_sizes, ref);
  for (int64_t chunk : plan.chunks) {
    if (chunk == plan.reference_chunk) continue;
    const std::string where = "chunk " + std::to_string(chunk);
    auto eng = make(chunk, false);
    for (std::size_t i = 0; i < targets.size(); ++i)
      expect_identical(run_alone(*eng, targets[i]), want[i],
                       where + ", " + targets[i].id + " alone");
    check_batches(*eng, targets, want, plan, {plan.batch_sizes.back()}, where);
  }
  auto cache = make(plan.reference_chunk, true);
  check_prefix_cache(*cache, *plain, targets, want, mac, base.mac_window, base.block_size);
}

}  // namespace macserve::testing::determinism
