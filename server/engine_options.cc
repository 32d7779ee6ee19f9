#include "engine_options.h"

#include <string>

namespace macserve::server {
namespace {

// An option whose value is one of E's names (CLI11 lists them on a bad value); the engine gets the
// enum value.
template <class E>
CLI::Option* add_enum_option(CLI::App& cmd, const std::string& flag, E& target,
                             const std::string& help) {
  CLI::Option* opt = cmd.add_option_function<std::string>(
      flag,
      [&target, flag](const std::string& name) { target = engine::parse_enum<E>(name, flag); },
      help);
  opt->check(CLI::IsMember(engine::enum_names<E>()));
  opt->default_str(engine::to_string(target));
  return opt;
}

}  // namespace

void add_engine_options(CLI::App& cmd, engine::EngineConfig& cfg) {
  cmd.add_option("--model,-m", cfg.model_path,
                 "HF model directory or .gguf file (default: SmolLM2-135M-Instruct)");
  add_enum_option(cmd, "--device", cfg.device, "cpu|cuda|auto");
  cmd.add_option("--tokenizer", cfg.tokenizer_path, "Tokenizer directory (default: the model's)");
  add_enum_option(cmd, "--load-format", cfg.load_format, "auto|safetensors|gguf|dummy");
  add_enum_option(cmd, "--cpu-weights", cfg.cpu_weights,
                  "Quantized GGUF weights on the CPU: native (kept in their blocks) or f32 "
                  "(dequantized at load)");
  cmd.add_option("--tensor-parallel-size", cfg.tensor_parallel_size,
                 "Ranks the model is sharded over (1, 2, 4 or 8; heads, MLP and vocabulary split, "
                 "one worker thread per rank); the CPU backend only for now")
      ->capture_default_str();
  cmd.add_option("--kv-cache-tokens", cfg.kv_cache_tokens, "KV cache capacity in tokens (0 = auto)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd.add_option("--gpu-memory-utilization", cfg.gpu_memory_utilization,
                 "Share (0, 1] of the GPU's memory for weights, activations and the KV pool (CUDA)")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd.add_option("--max-model-len", cfg.max_model_len, "Context length cap (0 = the model's)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd.add_option("--block-size", cfg.block_size, "KV block size in tokens")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd.add_option("--max-num-seqs", cfg.max_num_seqs, "Sequences per step")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  cmd.add_option("--max-num-batched-tokens", cfg.max_num_batched_tokens,
                 "Tokens per step (prefill chunking budget)")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  cmd.add_option("--max-queued-requests", cfg.max_queued_requests,
                 "Waiting sequences beyond which new requests are rejected at once")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))
      ->capture_default_str();
  cmd.add_flag("!--no-enable-prefix-caching", cfg.enable_prefix_caching,
               "Turn the prefix cache off");
  cmd.add_flag("--deterministic", cfg.deterministic,
               "Bit-identical logits per request whatever its batch, prefill chunking or prefix "
               "cache hits (seeded sampling reproducible); costs throughput on CUDA");
  add_enum_option(cmd, "--scheduling-policy", cfg.scheduling_policy, "fcfs|priority");
  add_enum_option(cmd, "--async-scheduling", cfg.async_scheduling,
                  "Schedule step N+1 while the device runs step N: auto (on for CUDA), on, off");
  add_enum_option(
      cmd, "--device-sampling", cfg.device_sampling,
      "Greedy steps take the argmax on the device, copying token ids instead of logits: on, off, "
      "auto (on for CUDA)");
  cmd.add_option("--engine-seed", cfg.default_seed,
                 "Seed of the random streams of unseeded requests");
  add_mac_options(cmd, cfg);
}

void add_mac_options(CLI::App& cmd, engine::EngineConfig& cfg) {
  add_enum_option(cmd, "--attention", cfg.attention,
                  "Decode attention: mac (MAC-Attention) or full");
  cmd.add_option("--mac-threshold", cfg.mac_threshold,
                 "Match threshold t in [0, 1] (higher is stricter)")
      ->capture_default_str();
  cmd.add_option("--mac-window", cfg.mac_window, "Ring size M: recent queries matched against")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd.add_option("--mac-band", cfg.mac_band, "Band r: keys recomputed behind the match boundary")
      ->check(CLI::Range(1, 1 << 24))
      ->capture_default_str();
  cmd.add_option("--mac-min-context", cfg.mac_min_context,
                 "Context length from which matching starts")
      ->check(CLI::Range(0, 1 << 30))
      ->capture_default_str();
  cmd.add_option("--mac-sink-tokens", cfg.mac_sink_tokens,
                 "Leading keys always recomputed, never stored")
      ->check(CLI::Range(0, 1 << 20))
      ->capture_default_str();
  add_enum_option(cmd, "--mac-ring-dtype", cfg.mac_ring_dtype,
                  "Ring storage of q and o: bf16 or fp32");
  cmd.add_option("--mac-ring-slots", cfg.mac_ring_slots,
                 "MAC ring slots (sequences MAC can act on at once), or auto: min(max-num-seqs, KV "
                 "tokens / "
                 "mac-min-context)")
      ->transform([](const std::string& v) { return v == "auto" ? std::string("-1") : v; }, "", "")
      ->check(CLI::Range(int64_t{-1}, int64_t{1} << 20))
      ->default_str("auto");
  cmd.add_option("--mac-audit-rate", cfg.mac_audit_rate,
                 "Fraction of steps re-run with exact attention")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  cmd.add_option("--mac-dump", cfg.mac_dump,
                 "Write the first request's MAC decisions and ring rows (JSON lines)");
}

}  // namespace macserve::server
