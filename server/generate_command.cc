#include "generate_command.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include <spdlog/spdlog.h>

#include "default_model.h"
#include "engine_options.h"
#include "macserve/core/error.h"
#include "macserve/engine/engine.h"

namespace macserve::server {
namespace {

struct GenerateOptions {
  engine::EngineConfig engine;
  std::string prompt;
  sampling::SamplingParams params;
  int64_t seed = -1;
  bool no_special = false;
  std::string stats_json;
};

// --stats-json: the run's token ids, timings and MAC telemetry, for scripts and benchmarks.
void write_stats_json(const std::string& path, const std::vector<int32_t>& prompt,
                      const std::vector<int32_t>& generated, const engine::RequestOutput& last,
                      const engine::EngineStats& st) {
  nlohmann::json j = {{"prompt_tokens", prompt.size()},
                      {"completion_ids", generated},
                      {"finish_reason", engine::to_string(last.finish_reason)},
                      {"time_to_first_token", last.time_to_first_token},
                      {"total_time", last.total_time},
                      {"mac",
                       {{"decode_steps", last.mac.decode_steps},
                        {"heads", last.mac.heads},
                        {"eligible_heads", last.mac.eligible_heads},
                        {"hit_heads", last.mac.hit_heads},
                        {"kv_bytes_read", last.mac.kv_bytes_read},
                        {"groups_all_hit", last.mac.groups_all_hit},
                        {"groups_mixed", last.mac.groups_mixed},
                        {"groups_all_miss", last.mac.groups_all_miss},
                        {"kv_bytes_full", last.mac.kv_bytes_full},
                        {"layer_heads", st.mac_layer_heads},
                        {"layer_hits", st.mac_layer_hits},
                        {"audited_steps", st.mac_audited_steps},
                        {"layer_audit_rel_l2", st.mac_layer_audit_rel_l2}}}};
  std::ofstream f(path);
  if (!f) throw_error(ErrorCode::kInvalidArgument, "cannot write --stats-json file {}", path);
  f << j.dump(1) << "\n";
}

int run_generate(GenerateOptions& o, const Environment& env) {
  if (o.engine.model_path.empty()) o.engine.model_path = resolve_default_model(env);
  apply_environment(env, o.engine);
  if (o.seed >= 0) o.params.seed = static_cast<uint64_t>(o.seed);
  auto eng = engine::Engine::create(o.engine);
  const auto& tok = eng->tokenizer();
  std::vector<int32_t> ids = tok.encode(o.prompt, !o.no_special);
  if (ids.empty()) {
    // An empty prompt starts from BOS alone.
    if (tok.bos_id() < 0)
      throw_error(ErrorCode::kInvalidArgument,
                  "the prompt is empty and this model has no BOS token to start from");
    ids.push_back(tok.bos_id());
  }
  spdlog::info("prompt: {} tokens", ids.size());
  auto stream = eng->submit({"generate-0", ids, o.params});
  engine::RequestOutput out;
  const auto t0 = std::chrono::steady_clock::now();
  engine::RequestOutput last;
  std::vector<int32_t> generated;
  while (stream->next(out)) {
    std::fwrite(out.text.data(), 1, out.text.size(), stdout);
    std::fflush(stdout);
    for (const auto& t : out.tokens) generated.push_back(t.id);
    if (out.finished) last = out;
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // The engine publishes its stats after the step that finished the stream: stopping it first
  // (its last act is a final publish) makes the per-layer MAC figures include that step.
  eng->shutdown();
  const engine::EngineStats st = eng->stats();
  if (last.finish_reason == engine::FinishReason::kError)
    throw_error(ErrorCode::kInvalidArgument, "{}", last.error);
  const double decode_time = last.total_time - last.time_to_first_token;
  const double tps = last.completion_tokens > 1 && decode_time > 0
                         ? (last.completion_tokens - 1) / decode_time
                         : 0.0;
  std::fprintf(stderr,
               "\n[macserve] finish=%s prompt_tokens=%lld completion_tokens=%lld ttft=%.3fs "
               "decode=%.2f tok/s "
               "total=%.3fs weight_bytes=%lld\n",
               engine::to_string(last.finish_reason), static_cast<long long>(last.prompt_tokens),
               static_cast<long long>(last.completion_tokens), last.time_to_first_token, tps, wall,
               static_cast<long long>(eng->weight_bytes()));
  if (last.mac.heads > 0) {
    std::fprintf(
        stderr,
        "[macserve] mac: decode_steps=%lld heads=%lld eligible=%lld hits=%lld hit_rate=%.4f "
        "kv_read=%.1f MiB full_attention=%.1f MiB (%.3fx)\n",
        static_cast<long long>(last.mac.decode_steps), static_cast<long long>(last.mac.heads),
        static_cast<long long>(last.mac.eligible_heads), static_cast<long long>(last.mac.hit_heads),
        last.mac.hit_rate(), last.mac.kv_bytes_read / 1048576.0, last.mac.kv_bytes_full / 1048576.0,
        last.mac.kv_bytes_full > 0
            ? static_cast<double>(last.mac.kv_bytes_read) / last.mac.kv_bytes_full
            : 0.0);
    std::string per_layer;
    for (std::size_t l = 0; l < st.mac_layer_heads.size(); ++l) {
      const double rate =
          st.mac_layer_heads[l] > 0 ? double(st.mac_layer_hits[l]) / st.mac_layer_heads[l] : 0.0;
      per_layer += fmt::format("{}{:.3f}", l ? "," : "", rate);
    }
    std::fprintf(
        stderr,
        "[macserve] mac: kv_groups all_hit=%lld mixed=%lld all_miss=%lld hit_rate_per_layer=%s\n",
        static_cast<long long>(last.mac.groups_all_hit),
        static_cast<long long>(last.mac.groups_mixed),
        static_cast<long long>(last.mac.groups_all_miss), per_layer.c_str());
    if (st.mac_audited_steps > 0) {
      std::string errs;
      for (std::size_t l = 0; l < st.mac_layer_audit_rel_l2.size(); ++l)
        errs += fmt::format("{}{:.2e}", l ? "," : "", st.mac_layer_audit_rel_l2[l]);
      std::fprintf(stderr, "[macserve] mac: audited_steps=%lld rel_l2_per_layer=%s\n",
                   static_cast<long long>(st.mac_audited_steps), errs.c_str());
    }
  }
  if (!o.stats_json.empty()) write_stats_json(o.stats_json, ids, generated, last, st);
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, const Environment& env, int& exit_code) {
  auto opts = std::make_shared<GenerateOptions>();
  opts->params.temperature = 0.0f;
  opts->engine.max_num_seqs = 1;  // one request: one MAC ring slot
  CLI::App* cmd =
      app.add_subcommand("generate", "Generate a continuation of one prompt (text to stdout)");
  cmd->add_option("--prompt,-p", opts->prompt, "Prompt text (empty: start from BOS)");
  cmd->add_option("--max-tokens,-n", opts->params.max_tokens, "Tokens to generate")
      ->check(CLI::Range(1, 1 << 24));
  cmd->add_option("--temperature,-t", opts->params.temperature, "0 = greedy")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_option("--top-k", opts->params.top_k, "Top-k (0 = off)");
  cmd->add_option("--top-p", opts->params.top_p, "Top-p (1 = off)");
  cmd->add_option("--min-p", opts->params.min_p, "Min-p (0 = off)");
  cmd->add_option("--repetition-penalty", opts->params.repetition_penalty,
                  "HF repetition penalty (1 = off)");
  cmd->add_option("--seed,-s", opts->seed, "Random seed of the request");
  cmd->add_option("--stop", opts->params.stop, "Stop string (repeatable)");
  cmd->add_flag("--ignore-eos", opts->params.ignore_eos, "Keep generating after EOS");
  cmd->add_option("--stats-json", opts->stats_json,
                  "Write token ids, timings and MAC telemetry as JSON");
  cmd->add_flag("--no-special", opts->no_special, "Do not add BOS/special tokens to the prompt");
  add_engine_options(*cmd, opts->engine);
  cmd->callback([opts, &env, &exit_code] { exit_code = run_generate(*opts, env); });
}

}  // namespace macserve::server
