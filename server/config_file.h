// `--config FILE` for subcommands: a flat TOML/INI file of `flag-name = value` lines (a `[serve]`
// section header, comments and blank lines allowed) becomes command-line flags placed before the
// user's own, so flags given on the command line win; a key whose MACSERVE_* environment
// variable is set is skipped, so the environment wins over the file too.
#pragma once

#include <set>
#include <string>
#include <vector>

namespace macserve::server {

// Returns argv with every `--config FILE` / `--config=FILE` expanded in place (the flag itself is
// kept so the subcommand accepts it); env_names: the MACSERVE_* variables that are set
// (Environment::macserve_names). Throws macserve::Error naming the file and line on errors.
std::vector<std::string> expand_config_files(const std::vector<std::string>& argv,
                                             const std::set<std::string>& env_names);

}  // namespace macserve::server
