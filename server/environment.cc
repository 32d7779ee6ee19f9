#include "environment.h"

#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "macserve/core/error.h"

namespace macserve::server {
namespace {

std::string get(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// spdlog's level names.
std::string parse_log_level(const std::string& v) {
  for (const char* ok :
       {"trace", "debug", "info", "warn", "warning", "error", "err", "critical", "off"})
    if (v == ok) return v;
  throw_error(
      ErrorCode::kInvalidArgument,
      "MACSERVE_LOG_LEVEL must be one of trace, debug, info, warn, error, critical, off; got '{}'",
      v);
}

bool parse_graphs(const std::string& v) {
  if (v == "1") return true;
  if (v == "0") return false;
  throw_error(ErrorCode::kInvalidArgument,
              "MACSERVE_CUDA_GRAPHS must be 1 (on) or 0 (off), got '{}'", v);
}

// "RATE" or "RATE,clustered", RATE in [0, 1].
void parse_force_hits(const std::string& v, Environment& env) {
  char* end = nullptr;
  const float rate = std::strtof(v.c_str(), &end);
  const std::string_view rest(end);
  if (end == v.c_str() || !(rate >= 0.0f && rate <= 1.0f) ||
      !(rest.empty() || rest == ",clustered"))
    throw_error(
        ErrorCode::kInvalidArgument,
        "MACSERVE_MAC_FORCE_HITS must be RATE or RATE,clustered with RATE in [0, 1], got '{}'", v);
  env.mac_force_hit_rate = rate;
  env.mac_force_clustered = rest == ",clustered";
}

}  // namespace

Environment read_environment() {
  Environment env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    if (entry.rfind("MACSERVE_", 0) == 0)
      env.macserve_names.emplace(entry.substr(0, entry.find('=')));
  }
  if (std::string v = get("MACSERVE_LOG_LEVEL"); !v.empty()) env.log_level = parse_log_level(v);
  env.default_model = get("MACSERVE_DEFAULT_MODEL");
  env.cache_dir = get("MACSERVE_CACHE_DIR");
  if (env.cache_dir.empty()) {
    const char* home = std::getenv("HOME");
    env.cache_dir = home != nullptr ? std::string(home) + "/.cache/macserve" : ".cache/macserve";
  }
  if (std::string v = get("MACSERVE_CPU_GEMM"); !v.empty())
    env.cpu_gemm = engine::parse_enum<engine::CpuGemm>(v, "MACSERVE_CPU_GEMM");
  if (std::string v = get("MACSERVE_CUDA_ATTENTION"); !v.empty())
    env.cuda_attention = engine::parse_enum<engine::CudaAttention>(v, "MACSERVE_CUDA_ATTENTION");
  if (std::string v = get("MACSERVE_CUDA_GRAPHS"); !v.empty()) env.cuda_graphs = parse_graphs(v);
  if (std::string v = get("MACSERVE_MAC_FORCE_HITS"); !v.empty()) parse_force_hits(v, env);
  return env;
}

void apply_environment(const Environment& env, engine::EngineConfig& cfg) {
  cfg.cpu_gemm = env.cpu_gemm;
  cfg.cuda_attention = env.cuda_attention;
  cfg.cuda_graphs = env.cuda_graphs;
  cfg.mac_force_hit_rate = env.mac_force_hit_rate;
  cfg.mac_force_clustered = env.mac_force_clustered;
}

}  // namespace macserve::server
