// Where tests find ../shared (models, tokenizers, goldens) and the repo's fixtures.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace macserve::testing {

inline std::string shared_dir() {
  if (const char* env = std::getenv("MACSERVE_SHARED_DIR")) return env;
  return MACSERVE_SHARED_DIR_DEFAULT;
}

inline std::string models_dir() {
  if (const char* env = std::getenv("MACSERVE_TEST_MODELS")) return env;
  return shared_dir() + "/models";
}

// The repo's tests/fixtures; env MACSERVE_FIXTURES_DIR points elsewhere (a test bundle carried to a
// machine without the source tree: scripts/gpu_bundle.sh).
inline std::string fixtures_dir() {
  if (const char* env = std::getenv("MACSERVE_FIXTURES_DIR")) return env;
  return std::string(MACSERVE_SOURCE_DIR) + "/tests/fixtures";
}

// The repo's configs/ (config.json of real shapes for --load-format dummy); env
// MACSERVE_CONFIGS_DIR points elsewhere. On a machine that has a copy of the tree but not the one
// the build was configured from, ./configs (tests run from the repo root there).
inline std::string configs_dir() {
  if (const char* env = std::getenv("MACSERVE_CONFIGS_DIR")) return env;
  const std::string src = std::string(MACSERVE_SOURCE_DIR) + "/configs";
  return std::filesystem::exists(src) ? src : std::string("configs");
}

// The embedded default model (SmolLM2-135M-Instruct, Q4_1 GGUF): env MACSERVE_DEFAULT_MODEL, else
// where scripts/fetch_default_model.sh puts it, ${MACSERVE_CACHE_DIR:-~/.cache/macserve}/models/
// (the server's lookup, server/default_model.h). Empty variables count as unset.
inline std::string default_model_path() {
  if (const char* env = std::getenv("MACSERVE_DEFAULT_MODEL"); env != nullptr && *env != '\0')
    return env;
  const char* cache = std::getenv("MACSERVE_CACHE_DIR");
  const char* home = std::getenv("HOME");
  const std::string dir = cache != nullptr && *cache != '\0'
                              ? cache
                              : std::string(home != nullptr ? home : ".") + "/.cache/macserve";
  return dir + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
}

inline bool exists(const std::string& p) { return std::filesystem::exists(p); }

}  // namespace macserve::testing

// Skips the current test with a clear message when a path is missing.
#define MACSERVE_REQUIRE_PATH(p)                                                      \
  do {                                                                                \
    if (!::macserve::testing::exists(p))                                              \
      GTEST_SKIP() << "test data not found: " << (p) << " (set MACSERVE_SHARED_DIR)"; \
  } while (0)
