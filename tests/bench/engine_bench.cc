// Engine throughput: N concurrent greedy requests (random prompts of a fixed length, fixed output
// length, EOS ignored), reporting output tokens/s, mean step time, TTFT, and the host gap between
// back-to-back device steps (an upper bound of the device's idle time; what async scheduling
// shrinks). Report, never gate.
//   build/bin/engine_bench --model DIR|FILE --concurrency 1,8,32 [--prompt-len 128] [--max-tokens
//   64]
//       [--attention mac|full] [--device cpu|cuda] [--load-format dummy] [--async-scheduling
//       auto|on|off]
//       [--cached-prompts] [--warm-pass] [--max-num-batched-tokens N]
//       [--csv docs/perf/engine_cpu.csv]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "macserve/core/error.h"
#include "macserve/core/logging.h"
#include "macserve/engine/engine.h"

using namespace macserve;

namespace {

// --flag NAME for one of EngineConfig's enums; a bad name is a usage error listing the allowed
// ones.
template <class E>
void add_enum(CLI::App& app, const std::string& flag, E& target, const std::string& help = "") {
  app.add_option_function<std::string>(
      flag,
      [&target, flag](const std::string& v) {
        try {
          target = engine::parse_enum<E>(v, flag);
        } catch (const Error& e) {
          throw CLI::ValidationError(e.what());
        }
      },
      help);
}

// The server's environment switches that reach the engine (server/environment.h), read here too
// so the benchmark runs the same kernels as `macserve` under the same variables.
void read_bench_environment(engine::EngineConfig& cfg) {
  if (const char* v = std::getenv("MACSERVE_CPU_GEMM"); v != nullptr && *v != '\0')
    cfg.cpu_gemm = engine::parse_enum<engine::CpuGemm>(v, "MACSERVE_CPU_GEMM");
  if (const char* v = std::getenv("MACSERVE_CUDA_ATTENTION"); v != nullptr && *v != '\0')
    cfg.cuda_attention = engine::parse_enum<engine::CudaAttention>(v, "MACSERVE_CUDA_ATTENTION");
}

struct Row {
  int concurrency;
  double out_tok_s, step_ms, mean_ttft_s, wall_s, gap_ms, decode_step_ms, sample_ms, launch_ms;
  int64_t steps, tokens;
};

// cached: the prompts are run once first (one output token), so that the measured requests find
// them in the prefix cache and their steps are (nearly) pure decode steps.
Row run(engine::Engine& eng, int n, int prompt_len, int max_tokens, uint32_t seed, bool cached) {
  std::mt19937 rng(seed);
  const int64_t vocab = eng.model_config().vocab_size;
  std::vector<engine::Request> reqs;
  for (int i = 0; i < n; ++i) {
    engine::Request r;
    r.id = "b" + std::to_string(i);
    for (int j = 0; j < prompt_len; ++j)
      r.prompt_ids.push_back(3 + static_cast<int32_t>(rng() % (vocab - 3)));
    r.params.temperature = 0.0f;
    r.params.max_tokens = cached ? 1 : max_tokens;
    r.params.ignore_eos = true;
    reqs.push_back(std::move(r));
  }
  if (cached) {
    std::vector<std::shared_ptr<engine::ResponseStream>> warm;
    for (const engine::Request& r : reqs) warm.push_back(eng.submit(r));
    for (auto& s : warm) {
      engine::RequestOutput out;
      while (s->next(out)) {
      }
    }
    for (engine::Request& r : reqs) r.params.max_tokens = max_tokens;
  }
  const auto before = eng.stats();
  std::vector<std::shared_ptr<engine::ResponseStream>> streams;
  const auto t0 = std::chrono::steady_clock::now();
  for (const engine::Request& r : reqs) streams.push_back(eng.submit(r));
  double ttft = 0, tpot = 0;
  int64_t tokens = 0;
  for (auto& s : streams) {
    engine::RequestOutput out;
    while (s->next(out)) {
      tokens += static_cast<int64_t>(out.tokens.size());
      if (out.finished) {
        if (out.finish_reason == engine::FinishReason::kError)
          throw Error(ErrorCode::kInternal, out.error);
        ttft += out.time_to_first_token;
        tpot += out.time_per_output_token;
      }
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  engine::EngineStats after = eng.stats();
  for (int i = 0; i < 100 && after.num_running + after.num_waiting > 0;
       ++i) {  // stats of the last step
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    after = eng.stats();
  }
  const int64_t steps = after.num_steps - before.num_steps;
  const int64_t gaps = after.step_gaps - before.step_gaps;
  const double gap_ms =
      gaps > 0 ? 1e3 * (after.step_gap_seconds - before.step_gap_seconds) / gaps : 0.0;
  const double per_step = 1e3 / static_cast<double>(std::max<int64_t>(1, steps));
  return {n,
          tokens / wall,
          1e3 * wall / std::max<int64_t>(1, steps),
          ttft / n,
          wall,
          gap_ms,
          1e3 * tpot / n,
          per_step * (after.sample_seconds - before.sample_seconds),
          per_step * (after.launch_seconds - before.launch_seconds),
          steps,
          tokens};
}

}  // namespace

int bench(const engine::EngineConfig& cfg, const std::vector<int>& levels, int prompt_len,
          int max_tokens, bool cached, bool warm_passes, const std::string& csv);

int main(int argc, char** argv) {
  CLI::App app{"macserve engine throughput benchmark"};
  engine::EngineConfig cfg;
  std::string concurrency = "1,8,32", csv;
  int prompt_len = 128, max_tokens = 64;
  bool cached = false, warm_passes = false;
  app.add_option("--model", cfg.model_path)->required();
  app.add_option("--concurrency", concurrency);
  app.add_option("--prompt-len", prompt_len);
  app.add_option("--max-tokens", max_tokens);
  add_enum(app, "--attention", cfg.attention);
  add_enum(app, "--device", cfg.device);
  app.add_option("--tokenizer", cfg.tokenizer_path,
                 "Tokenizer directory (needed with --load-format dummy)");
  add_enum(app, "--load-format", cfg.load_format);
  add_enum(app, "--async-scheduling", cfg.async_scheduling);
  add_enum(app, "--device-sampling", cfg.device_sampling,
           "Greedy sampling on the device: auto|on|off");
  app.add_option("--max-num-batched-tokens", cfg.max_num_batched_tokens);
  app.add_option("--csv", csv);
  app.add_flag("--warm-pass", warm_passes,
               "Run each concurrency once unmeasured first (graph capture)");
  app.add_flag("--cached-prompts", cached,
               "Measure with the prompts already in the prefix cache (decode steps)");
  CLI11_PARSE(app, argc, argv);
  const char* log_level = std::getenv("MACSERVE_LOG_LEVEL");  // env: MACSERVE_LOG_LEVEL
  init_logging(log_level != nullptr ? log_level : "warn");
  std::vector<int> levels;
  std::stringstream ss(concurrency);
  for (std::string item; std::getline(ss, item, ',');) levels.push_back(std::stoi(item));
  cfg.max_num_seqs = *std::max_element(levels.begin(), levels.end());
  cfg.max_model_len = prompt_len + max_tokens + 16;
  cfg.kv_cache_tokens = cfg.max_num_seqs * cfg.max_model_len;
  try {
    read_bench_environment(cfg);
    return bench(cfg, levels, prompt_len, max_tokens, cached, warm_passes, csv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "engine_bench: %s\n", e.what());
    return 1;
  }
}

int bench(const engine::EngineConfig& cfg, const std::vector<int>& levels, int prompt_len,
          int max_tokens, bool cached, bool warm_passes, const std::string& csv) {
  auto eng = engine::Engine::create(cfg);
  run(*eng, 1, 16, 4, 1, false);  // warm-up
  std::ofstream out;
  if (!csv.empty()) {
    const bool fresh = !std::ifstream(csv).good();
    out.open(csv, std::ios::app);
    if (fresh)
      out << "model,device,attention,async_scheduling,device_sampling,cached_prompts,concurrency,"
             "prompt_len,max_tokens,output_tok_s,step_ms,"
             "tpot_ms,step_gap_ms,sample_ms,launch_ms,mean_ttft_s,steps,wall_s\n";
  }
  std::printf("%-12s %10s %10s %10s %12s %10s %10s %12s %8s\n", "concurrency", "out tok/s",
              "step ms", "TPOT ms", "step gap ms", "sample ms", "launch ms", "mean TTFT s",
              "steps");
  for (int n : levels) {
    // A first pass captures the CUDA graphs of this batch size and context width (an eager step
    // and a capture, ~0.1 s on the 8B model); the second is reported.
    if (warm_passes) run(*eng, n, prompt_len, max_tokens, 7, cached);
    const Row r = run(*eng, n, prompt_len, max_tokens, 7, cached);
    std::printf("%-12d %10.1f %10.2f %10.3f %12.3f %10.3f %10.3f %12.3f %8lld\n", n, r.out_tok_s,
                r.step_ms, r.decode_step_ms, r.gap_ms, r.sample_ms, r.launch_ms, r.mean_ttft_s,
                static_cast<long long>(r.steps));
    if (out)
      out << cfg.model_path << "," << eng->device_name() << "," << engine::to_string(cfg.attention)
          << "," << engine::to_string(cfg.async_scheduling) << ","
          << engine::to_string(cfg.device_sampling) << "," << cached << "," << n << ","
          << prompt_len << "," << max_tokens << "," << r.out_tok_s << "," << r.step_ms << ","
          << r.decode_step_ms << "," << r.gap_ms << "," << r.sample_ms << "," << r.launch_ms << ","
          << r.mean_ttft_s << "," << r.steps << "," << r.wall_s << "\n";
  }
  return 0;
}
