// macserve: command-line entry. Subcommands: generate, serve.
#include <algorithm>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "config_file.h"
#include "environment.h"
#include "generate_command.h"
#include "macserve/core/error.h"
#include "macserve/core/logging.h"
#include "serve_command.h"

namespace {

int run(int argc, char** argv) {
  macserve::server::Environment env;
  try {
    env = macserve::server::read_environment();
  } catch (const macserve::Error& e) {
    std::fprintf(stderr, "macserve: error: %s\n", e.what());
    return 1;
  }
  CLI::App app{"macserve: LLM inference with MAC-Attention"};
  app.require_subcommand(1);
  std::string log_level = "info";
  app.add_option("--log-level", log_level, "trace|debug|info|warn|error|off")
      ->capture_default_str();
  int exit_code = 0;
  macserve::server::add_generate_command(app, env, exit_code);
  macserve::server::add_serve_command(app, env, exit_code);
  // env: MACSERVE_LOG_LEVEL overrides --log-level.
  app.parse_complete_callback(
      [&] { macserve::init_logging(env.log_level.empty() ? log_level : env.log_level); });
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    args = macserve::server::expand_config_files(args, env.macserve_names);
    std::reverse(args.begin(), args.end());  // CLI11 takes the vector back to front
    app.parse(args);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const macserve::Error& e) {
    std::fprintf(stderr, "macserve: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "macserve: internal error: %s\n", e.what());
    return 2;
  }
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (...) {  // what run's own handlers leave: CLI set-up, allocation failures
    std::fputs("macserve: internal error during start-up\n", stderr);
    return 2;
  }
}
