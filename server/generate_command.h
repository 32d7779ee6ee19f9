// `macserve generate`: one prompt in, the continuation on stdout, diagnostics on stderr.
#pragma once

#include <CLI/CLI.hpp>

namespace macserve::server {

// Registers the subcommand; the returned callback runs it and gives the exit code.
void add_generate_command(CLI::App& app, int& exit_code);

}  // namespace macserve::server
