#include "engine_options.h"

namespace macserve::server {

void add_engine_options(CLI::App& cmd, engine::EngineConfig& cfg) {
  cmd.add_option("--model,-m", cfg.model_path, "HF model directory or .gguf file (default: SmolLM2-135M-Instruct)");
  cmd.add_option("--device", cfg.device, "cpu|cuda|auto")->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
  cmd.add_option("--tokenizer", cfg.tokenizer_path, "Tokenizer directory (default: the model's)");
  cmd.add_option("--load-format", cfg.load_format, "auto|safetensors|gguf|dummy")
      ->check(CLI::IsMember({"auto", "safetensors", "gguf", "dummy"}))->capture_default_str();
  cmd.add_option("--kv-cache-tokens", cfg.kv_cache_tokens, "KV cache capacity in tokens (0 = auto)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  cmd.add_option("--gpu-memory-utilization", cfg.gpu_memory_utilization,
                 "Share (0, 1] of the GPU's memory for weights, activations and the KV pool (CUDA)")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd.add_option("--max-model-len", cfg.max_model_len, "Context length cap (0 = the model's)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
  cmd.add_option("--block-size", cfg.block_size, "KV block size in tokens")->check(CLI::Range(1, 1024))
      ->capture_default_str();
  cmd.add_option("--max-num-seqs", cfg.max_num_seqs, "Sequences per step (also MAC ring slots)")
      ->check(CLI::Range(1, 4096))->capture_default_str();
  cmd.add_option("--max-num-batched-tokens", cfg.max_num_batched_tokens, "Tokens per step (prefill chunking budget)")
      ->check(CLI::Range(1, 1 << 24))->capture_default_str();
  cmd.add_option("--max-queued-requests", cfg.max_queued_requests,
                 "Waiting sequences beyond which new requests are rejected at once")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 30))->capture_default_str();
  cmd.add_flag("!--no-enable-prefix-caching", cfg.enable_prefix_caching, "Turn the prefix cache off");
  cmd.add_option("--scheduling-policy", cfg.scheduling_policy, "fcfs|priority")
      ->check(CLI::IsMember({"fcfs", "priority"}))->capture_default_str();
  cmd.add_option("--async-scheduling", cfg.async_scheduling,
                 "Schedule step N+1 while the device runs step N: auto (on for CUDA), on, off")
      ->check(CLI::IsMember({"auto", "on", "off"}))->capture_default_str();
  cmd.add_option("--device-sampling", cfg.device_sampling,
                 "Greedy steps take the argmax on the device, copying token ids instead of logits: on, off, "
                 "auto (on for CUDA)")
      ->check(CLI::IsMember({"auto", "on", "off"}))->capture_default_str();
  cmd.add_option("--engine-seed", cfg.default_seed, "Seed of the random streams of unseeded requests");
  add_mac_options(cmd, cfg);
}

void add_mac_options(CLI::App& cmd, engine::EngineConfig& cfg) {
  cmd.add_option("--attention", cfg.attention, "Decode attention: mac (MAC-Attention) or full")
      ->check(CLI::IsMember({"mac", "full"}))->capture_default_str();
  cmd.add_option("--mac-threshold", cfg.mac_threshold, "Match threshold t in [0, 1] (higher is stricter)")
      ->capture_default_str();
  cmd.add_option("--mac-window", cfg.mac_window, "Ring size M: recent queries matched against")
      ->check(CLI::Range(1, 1 << 20))->capture_default_str();
  cmd.add_option("--mac-band", cfg.mac_band, "Band r: keys recomputed behind the match boundary")
      ->check(CLI::Range(1, 1 << 24))->capture_default_str();
  cmd.add_option("--mac-min-context", cfg.mac_min_context, "Context length from which matching starts")
      ->check(CLI::Range(0, 1 << 30))->capture_default_str();
  cmd.add_option("--mac-sink-tokens", cfg.mac_sink_tokens, "Leading keys always recomputed, never stored")
      ->check(CLI::Range(0, 1 << 20))->capture_default_str();
  cmd.add_option("--mac-ring-dtype", cfg.mac_ring_dtype, "Ring storage of q and o: bf16 or fp32")
      ->check(CLI::IsMember({"bf16", "fp32"}))->capture_default_str();
  cmd.add_option("--mac-audit-rate", cfg.mac_audit_rate, "Fraction of steps re-run with exact attention")
      ->check(CLI::Range(0.0, 1.0))->capture_default_str();
  cmd.add_option("--mac-dump", cfg.mac_dump, "Write the first request's MAC decisions and ring rows (JSON lines)");
}

}  // namespace macserve::server
