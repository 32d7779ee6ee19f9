// `macserve generate`: one prompt in, the continuation on stdout, diagnostics on stderr.
#pragma once

#include <CLI/CLI.hpp>

#include "environment.h"

namespace macserve::server {

// Registers the subcommand; the returned callback runs it and gives the exit code. `env` must
// outlive the parse.
void add_generate_command(CLI::App& app, const Environment& env, int& exit_code);

}  // namespace macserve::server
