// Llama-3.1-8B-shaped model with dummy weights on the CUDA backend: batch-1 time per output token
// at 4K and 128K context, batch-16 and batch-64 step time at 4K context, each against its byte
// floor, and the GPU idle time between steps. The KV cache holds random bf16 values (no prefill is
// run: the decode step's cost depends only on the context length). Model-level (StepInputs ->
// logits on the host), so the scheduler and sampler are not included. Prints CSV on stdout.
//   llama_gpu_bench [config dir, default configs/llama-3.1-8b] [prefill: only the prefill rows]
//   llama_gpu_bench [config dir] prefill CHUNK PRIOR: that prefill row alone (for a profiler)
//   llama_gpu_bench [config dir] b1_4k|b1_128k|b16_4k|b64_4k: that decode scenario alone, with
//   graphs, and no prefill rows (one step's kernels for a profiler such as nsys)
//   --deterministic anywhere: every run above with BackendOptions::deterministic (--deterministic
//   of macserve: fixed-order GEMMs, attention on fixed key segments)
//   llama_gpu_bench [config dir] mac: decode at batch 1 and 4 at 128K and batch 16 at 32K, full
//   attention vs MAC-Attention
//     with forced hit rates (cuda_set_mac_force_hits; benchmark only: the ring holds random valid
//     rows, a forced hit reuses the row of position m - 64), per head or per KV group; graphs on.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "macserve/backend/backend.h"
#include "macserve/backend/cuda_backend.h"
#include "macserve/models/loader/checkpoint.h"
#include "macserve/models/model.h"

using namespace macserve;
using Clock = std::chrono::steady_clock;

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Result {
  double step_ms;       // forward + logits on the host, one step at a time (host clock)
  double pipelined_ms;  // forwards enqueued back to back (device bound), per step
  double idle_ms;       // GPU idle between the end of one step and the start of the next
};

// mac: MAC-Attention decode (ring slot s per sequence); its telemetry is fetched each step as the
// model runner does (one copy before the logits'), and *hit_rate gets the realised hit fraction.
Result run(backend::Backend& be, models::Model& model, const models::KvCacheView& kv, int64_t batch,
           int64_t ctx, const std::vector<int32_t>& pool, const kernels::MacConfig* mac = nullptr,
           double* hit_rate = nullptr) {
  const int64_t bs = kv.layout.block_size, pages = (ctx + bs - 1) / bs;
  auto st = static_cast<cudaStream_t>(backend::cuda_stream(be));
  models::StepInputs in;
  in.max_blocks_per_seq = pages;
  in.query_start.push_back(0);
  for (int64_t s = 0; s < batch; ++s) {
    const int32_t* table = pool.data() + s * pages;
    const int64_t pos = ctx - 1;
    in.token_ids.push_back(static_cast<int32_t>((s * 7919 + 13) % 128000));
    in.positions.push_back(static_cast<int32_t>(pos));
    in.slot_mapping.push_back(static_cast<int64_t>(table[pos / bs]) * bs + pos % bs);
    in.query_start.push_back(static_cast<int32_t>(s + 1));
    in.context_lens.push_back(static_cast<int32_t>(ctx));
    in.block_tables.insert(in.block_tables.end(), table, table + pages);
    in.logits_rows.push_back(static_cast<int32_t>(s));
    if (mac != nullptr) {
      in.mac.modes.push_back(kernels::kMacDecode);
      in.mac.ring_slots.push_back(static_cast<int32_t>(s));
      in.mac.ring_valid_from.push_back(0);
      in.mac.rows_from.push_back(0);
    }
  }
  if (mac != nullptr) {
    in.mac.enabled = true;
    in.mac.config = *mac;
  }
  models::MacStepOutputs mac_out;
  // Like the model runner: one logits buffer for the whole run, page-locked.
  std::vector<float> logits(static_cast<std::size_t>(batch * model.config().vocab_size));
  be.register_host_buffer(logits.data(), logits.size() * sizeof(float));
  int64_t heads = 0, hits = 0;
  auto step = [&] {
    Tensor l = model.forward(in, kv, mac ? &mac_out : nullptr);
    logits.resize(static_cast<std::size_t>(l.numel()));
    be.copy_to_host(l, logits.data());
    if (mac == nullptr) return;
    model.read_mac_outputs(mac_out);
    for (const auto& d : mac_out.decisions) heads += d.eligible, hits += d.hit;
  };
  for (int i = 0; i < 3; ++i) step();
  constexpr int kSteps = 20;
  std::vector<cudaEvent_t> begin(kSteps), end(kSteps);
  for (int i = 0; i < kSteps; ++i) cudaEventCreate(&begin[i]), cudaEventCreate(&end[i]);
  std::vector<double> wall;
  for (int i = 0; i < kSteps; ++i) {
    const auto t0 = Clock::now();
    cudaEventRecord(begin[i], st);
    Tensor l = model.forward(in, kv, mac ? &mac_out : nullptr);
    cudaEventRecord(end[i], st);
    be.copy_to_host(l, logits.data());
    if (mac != nullptr) {
      model.read_mac_outputs(mac_out);
      for (const auto& d : mac_out.decisions) heads += d.eligible, hits += d.hit;
    }
    wall.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  std::vector<double> idle;
  for (int i = 0; i + 1 < kSteps; ++i) {
    float ms = 0;
    cudaEventElapsedTime(&ms, end[i], begin[i + 1]);
    idle.push_back(ms);
  }
  // Device-bound: enqueue forwards without reading logits in between.
  cudaEvent_t a, b;
  cudaEventCreate(&a), cudaEventCreate(&b);
  cudaEventRecord(a, st);
  for (int i = 0; i < kSteps; ++i) model.forward(in, kv, mac ? &mac_out : nullptr);
  cudaEventRecord(b, st);
  cudaEventSynchronize(b);
  float total = 0;
  cudaEventElapsedTime(&total, a, b);
  for (int i = 0; i < kSteps; ++i) cudaEventDestroy(begin[i]), cudaEventDestroy(end[i]);
  be.unregister_host_buffer(logits.data());
  if (hit_rate != nullptr)
    *hit_rate = heads > 0 ? static_cast<double>(hits) / static_cast<double>(heads) : 0.0;
  return {median(wall), total / kSteps, median(idle)};
}

// Decode at long context, batch 1 and 4 at 128K and batch 16 at 32K (what fits beside the weights):
// full attention, then MAC with forced hit rates (graphs on, 20 steps). The forced draw is per
// (layer, sequence, head or KV group), the same every step (the benchmark repeats one position).
int run_mac(backend::Backend& be, models::Model& model, const models::KvCacheView& kv_in,
            const std::vector<int32_t>& pool) {
  const ModelConfig& c = model.config();
  kernels::MacConfig cfg;  // defaults: t 0.45, M 512, r 256, min context 2048, no sink, bf16 ring
  models::KvCacheView kv = kv_in;
  const int64_t slots = 16;
  for (int64_t i = 0; i < c.num_layers; ++i) {
    kv.mac_rings.push_back(
        be.alloc_mac_ring(slots, cfg.window, c.num_q_heads, c.head_dim, cfg.ring_bf16));
    const kernels::MacRing& r = kv.mac_rings.back();
    const int64_t rows = slots * cfg.window * c.num_q_heads;
    // Every row valid (finite lse) so a forced hit always finds its row.
    backend::cuda_fill_uniform(be, Tensor(r.q, DType::kBF16, {rows * c.head_dim}, Device::kCuda),
                               100 + i, 1.0f);
    backend::cuda_fill_uniform(be, Tensor(r.o, DType::kBF16, {rows * c.head_dim}, Device::kCuda),
                               200 + i, 1.0f);
    backend::cuda_fill_uniform(be, Tensor(r.lse, DType::kF32, {rows}, Device::kCuda), 300 + i,
                               4.0f);
  }
  std::printf(
      "scenario,attention,forced_hit_rate,distribution,graphs,batch,context,step_ms,pipelined_ms,"
      "realised_hit_rate,speedup_vs_full\n");
  struct Scenario {
    const char* name;
    int64_t batch, ctx;
  };
  for (Scenario sc : {Scenario{"b1_128k", 1, 131072}, Scenario{"b4_128k", 4, 131072},
                      Scenario{"b16_32k", 16, 32768}}) {
    backend::cuda_set_mac_force_hits(be, -1.0f, false);
    model.set_graphs(false);
    model.set_graphs(true);
    const Result full = run(be, model, kv, sc.batch, sc.ctx, pool);
    std::printf("%s,full,,,1,%lld,%lld,%.3f,%.3f,,1.000\n", sc.name,
                static_cast<long long>(sc.batch), static_cast<long long>(sc.ctx), full.step_ms,
                full.pipelined_ms);
    std::fflush(stdout);
    struct Force {
      float rate;
      bool clustered;
    };
    for (Force f :
         {Force{1.0f, false}, Force{0.95f, false}, Force{0.95f, true}, Force{0.0f, false}}) {
      backend::cuda_set_mac_force_hits(be, f.rate, f.clustered);
      model.set_graphs(false);  // graphs keep the switch they were captured with: capture anew
      model.set_graphs(true);
      double hit = 0.0;
      const Result r = run(be, model, kv, sc.batch, sc.ctx, pool, &cfg, &hit);
      std::printf("%s,mac,%.2f,%s,1,%lld,%lld,%.3f,%.3f,%.4f,%.3f\n", sc.name, f.rate,
                  f.clustered ? "per_kv_group" : "per_head", static_cast<long long>(sc.batch),
                  static_cast<long long>(sc.ctx), r.step_ms, r.pipelined_ms, hit,
                  full.step_ms / r.step_ms);
      std::fflush(stdout);
    }
  }
  backend::cuda_set_mac_force_hits(be, -1.0f, false);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  backend::BackendOptions options;
  {  // --deterministic, wherever it is; the positional arguments close up behind it
    int out = 1;
    for (int i = 1; i < argc; ++i) {
      if (std::strcmp(argv[i], "--deterministic") == 0)
        options.deterministic = true;
      else
        argv[out++] = argv[i];
    }
    argc = out;
  }
  const std::string cfg =
      argc > 1 ? argv[1] : std::string(MACSERVE_SOURCE_DIR) + "/configs/llama-3.1-8b";
  std::string why;
  // env: MACSERVE_CUDA_ATTENTION=general runs every attention step on the general kernel (the
  // comparison in docs/perf/gpu.md), as it does for `macserve`.
  const char* attention = std::getenv("MACSERVE_CUDA_ATTENTION");
  options.cuda_general_attention = attention != nullptr && std::strcmp(attention, "general") == 0;
  auto be = backend::make_cuda_backend(&why, options);
  if (!be) {
    std::fprintf(stderr, "no CUDA device: %s\n", why.c_str());
    return 0;
  }
  auto t0 = Clock::now();
  auto model =
      models::create_model(models::load_checkpoint(cfg, models::LoadFormat::kDummy, 1), *be);
  be->synchronize();
  const double load_s = std::chrono::duration<double>(Clock::now() - t0).count();
  const ModelConfig& c = model->config();
  const bool mac_mode = argc > 2 && std::string(argv[2]) == "mac";
  // KV for the largest scenario: 64 x 4K, or (mac) 4 x 128K = 16 x 32K (69 GB beside 16 GB of
  // weights)
  const int64_t bs = 16, tokens = (mac_mode ? 4 * 131072 : 64 * 4096) + 64 * bs;
  const int64_t num_blocks = tokens / bs;
  models::KvCacheView kv;
  kv.layout = {num_blocks, c.num_kv_heads, bs, c.head_dim};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    kv.k.push_back(be->alloc(DType::kBF16, {num_blocks, c.num_kv_heads, bs, c.head_dim}));
    kv.v.push_back(be->alloc(DType::kBF16, {num_blocks, c.num_kv_heads, bs, c.head_dim}));
    backend::cuda_fill_uniform(*be, kv.k.back(), 2 * i + 1, 1.0f);
    backend::cuda_fill_uniform(*be, kv.v.back(), 2 * i + 2, 1.0f);
  }
  std::vector<int32_t> pool(static_cast<std::size_t>(num_blocks));
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), std::mt19937(3));
  // Bytes a decode step must read: every weight once (the embedding table only one row per token),
  // plus the K/V of every sequence.
  const double weights =
      static_cast<double>(model->weight_bytes()) -
      (c.tie_word_embeddings ? 0.0 : static_cast<double>(c.vocab_size) * c.hidden_size * 2);
  const double kv_per_token = 2.0 * c.num_layers * c.num_kv_heads * c.head_dim * 2;
  std::fprintf(stderr, "loaded %s (dummy) in %.1f s, %.2f GB of weights read per step\n",
               cfg.c_str(), load_s, weights / 1e9);
  if (mac_mode) return run_mac(*be, *model, kv, pool);
  std::printf(
      "scenario,graphs,batch,context,step_ms,pipelined_ms,idle_between_steps_ms,idle_fraction,"
      "floor_ms,step_over_floor\n");
  struct Scenario {
    const char* name;
    int64_t batch, ctx;
  };
  const std::string only = argc > 2 ? argv[2] : "";
  const bool prefill_only = only == "prefill";
  for (Scenario s : {Scenario{"b1_4k", 1, 4096}, Scenario{"b1_128k", 1, 131072},
                     Scenario{"b16_4k", 16, 4096}, Scenario{"b64_4k", 64, 4096}})
    for (int graphs : {0, 1}) {
      if (prefill_only) break;
      if (!only.empty() && (only != s.name || graphs == 0)) continue;
      model->set_graphs(graphs !=
                        0);  // decode steps replayed from CUDA graphs (1) or eager launches (0)
      const Result r = run(*be, *model, kv, s.batch, s.ctx, pool);
      const double floor_ms = (weights + kv_per_token * s.batch * s.ctx) / 4.52e12 * 1e3;
      std::printf("%s,%d,%lld,%lld,%.3f,%.3f,%.3f,%.3f,%.3f,%.3f\n", s.name, graphs,
                  static_cast<long long>(s.batch), static_cast<long long>(s.ctx), r.step_ms,
                  r.pipelined_ms, r.idle_ms, r.idle_ms / r.step_ms, floor_ms, r.step_ms / floor_ms);
      std::fflush(stdout);
    }
  // Prefill: one sequence's chunk of 2048 or 8192 tokens after 0 to 122,880 tokens of prior
  // context (flash prefill kernel; eager launches). Time per chunk, median of 5, CUDA events.
  if (!only.empty() && !prefill_only) return 0;
  std::vector<std::pair<int64_t, int64_t>> rows = {{2048, 0},     {2048, 2048},   {2048, 8192},
                                                   {2048, 32768}, {2048, 122880}, {8192, 0},
                                                   {8192, 8192},  {8192, 32768},  {8192, 122880}};
  if (prefill_only && argc > 4) {
    const int64_t chunk = std::atoll(argv[3]), prior = std::atoll(argv[4]);
    if (chunk < 1 || prior < 0 || prior + chunk > num_blocks * bs) {
      std::fprintf(stderr, "prefill CHUNK PRIOR: need CHUNK >= 1, PRIOR >= 0, sum <= %lld\n",
                   static_cast<long long>(num_blocks * bs));
      return 2;
    }
    rows = {{chunk, prior}};
  }
  std::printf("scenario,prior_context,chunk,ms,tokens_per_s\n");
  for (const auto& [chunk, prior] : rows) {
    const int64_t ctx = prior + chunk, pages = (ctx + bs - 1) / bs;
    models::StepInputs in;
    in.max_blocks_per_seq = pages;
    in.query_start = {0, static_cast<int32_t>(chunk)};
    in.context_lens = {static_cast<int32_t>(ctx)};
    in.block_tables.assign(pool.begin(), pool.begin() + pages);
    for (int64_t t = 0; t < chunk; ++t) {
      const int64_t pos = prior + t;
      in.token_ids.push_back(static_cast<int32_t>((t * 7919 + 13) % 128000));
      in.positions.push_back(static_cast<int32_t>(pos));
      in.slot_mapping.push_back(static_cast<int64_t>(pool[pos / bs]) * bs + pos % bs);
    }
    in.logits_rows = {static_cast<int32_t>(chunk - 1)};
    auto st = static_cast<cudaStream_t>(backend::cuda_stream(*be));
    std::vector<double> ms;
    for (int i = 0; i < 6; ++i) {
      cudaEvent_t a, b;
      cudaEventCreate(&a), cudaEventCreate(&b);
      cudaEventRecord(a, st);
      model->forward(in, kv);
      cudaEventRecord(b, st);
      cudaEventSynchronize(b);
      float t = 0;
      cudaEventElapsedTime(&t, a, b);
      if (i > 0) ms.push_back(t);
      cudaEventDestroy(a), cudaEventDestroy(b);
    }
    const double med = median(ms);
    std::printf("prefill,%lld,%lld,%.3f,%.0f\n", static_cast<long long>(prior),
                static_cast<long long>(chunk), med, chunk / med * 1e3);
    std::fflush(stdout);
  }
  return 0;
}
