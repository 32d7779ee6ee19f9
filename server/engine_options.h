// Engine and MAC-Attention flags shared by every subcommand that starts an engine.
#pragma once

#include <CLI/CLI.hpp>

#include "macserve/engine/engine.h"

namespace macserve::server {

// Model, device, KV cache and scheduler flags, then the MAC-Attention ones.
void add_engine_options(CLI::App& cmd, engine::EngineConfig& cfg);
void add_mac_options(CLI::App& cmd, engine::EngineConfig& cfg);

}  // namespace macserve::server
