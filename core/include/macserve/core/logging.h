// Logging: spdlog to stderr. stdout is reserved for program output (generated text).
#pragma once

#include <spdlog/spdlog.h>

namespace macserve {

// level: trace|debug|info|warn|error|off (the server's env MACSERVE_LOG_LEVEL overrides
// --log-level: server/environment.cc).
void init_logging(const std::string& level = "info");

}  // namespace macserve
