// Engine and MAC-Attention flags shared by every subcommand that starts an engine.
#pragma once

#include <CLI/CLI.hpp>

#include "macserve/engine/engine.h"

namespace macserve::server {

void add_mac_options(CLI::App& cmd, engine::EngineConfig& cfg);

}  // namespace macserve::server
