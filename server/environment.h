// The environment, read in one place at start-up (main): every variable macserve reads except the
// flags' own MACSERVE_<FLAG> forms, which CLI11 reads for `serve` (serve_command.cc). Nothing below
// the server reads the environment; what it holds reaches the engine as EngineConfig fields.
#pragma once

#include <set>
#include <string>

#include "macserve/engine/engine.h"

namespace macserve::server {

struct Environment {
  std::string log_level;      // MACSERVE_LOG_LEVEL: overrides --log-level ("": unset)
  std::string default_model;  // MACSERVE_DEFAULT_MODEL: the model when --model is not given
  std::string cache_dir;  // MACSERVE_CACHE_DIR, else $HOME/.cache/macserve, else .cache/macserve
  engine::CpuGemm cpu_gemm = engine::CpuGemm::kInvariant;               // MACSERVE_CPU_GEMM
  engine::CudaAttention cuda_attention = engine::CudaAttention::kAuto;  // MACSERVE_CUDA_ATTENTION
  bool cuda_graphs = true;                                              // MACSERVE_CUDA_GRAPHS=1|0
  float mac_force_hit_rate = -1.0f;  // MACSERVE_MAC_FORCE_HITS=RATE[,clustered] (benchmark only)
  bool mac_force_clustered = false;
  std::set<std::string>
      macserve_names;  // every MACSERVE_* variable that is set (config files defer to them)
};

// Reads and validates the environment; throws macserve::Error naming the variable on a bad value.
Environment read_environment();

// Copies the engine switches (CPU GEMM, CUDA attention kernels, CUDA graphs, forced MAC hits).
void apply_environment(const Environment& env, engine::EngineConfig& cfg);

}  // namespace macserve::server
