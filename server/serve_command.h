// `macserve serve`: the OpenAI-compatible HTTP server.
#pragma once

#include <CLI/CLI.hpp>

#include "environment.h"

namespace macserve::server {

// `env` must outlive the parse (the subcommand runs from CLI11's callback).
void add_serve_command(CLI::App& app, const Environment& env, int& exit_code);

}  // namespace macserve::server
