// Logging: spdlog to stderr. stdout is reserved for program output (generated text).
#pragma once

#include <spdlog/spdlog.h>

namespace macserve {

// level: trace|debug|info|warn|error|off. env: MACSERVE_LOG_LEVEL overrides when set.
void init_logging(const std::string& level = "info");

}  // namespace macserve
