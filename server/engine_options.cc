#include "engine_options.h"

namespace macserve::server {

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
