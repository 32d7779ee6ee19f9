// `macserve serve`: the OpenAI-compatible HTTP server.
#pragma once

#include <CLI/CLI.hpp>

namespace macserve::server {

void add_serve_command(CLI::App& app, int& exit_code);

}  // namespace macserve::server
