#include "config_file.h"

#include <algorithm>
#include <cctype>
#include <fstream>

#include "macserve/core/error.h"
#include "text_util.h"

namespace macserve::server {
namespace {

std::string env_name(const std::string& key) {
  std::string env = "MACSERVE_" + key;
  for (char& c : env)
    c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return env;
}

// A TOML basic string ("..." with \" \\ \n \t escapes), a literal string ('...'), or a bare value
// (number, boolean) up to a comment.
std::string parse_value(const std::string& raw, const std::string& where) {
  if (raw.empty()) throw_error(ErrorCode::kInvalidArgument, "{}: missing value", where);
  if (raw[0] == '"' || raw[0] == '\'') {
    const char q = raw[0];
    std::string out;
    std::size_t i = 1;
    for (; i < raw.size() && raw[i] != q; ++i) {
      if (q == '"' && raw[i] == '\\' && i + 1 < raw.size()) {
        const char e = raw[++i];
        out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
      } else {
        out += raw[i];
      }
    }
    if (i >= raw.size()) throw_error(ErrorCode::kInvalidArgument, "{}: unterminated string", where);
    const std::string rest = trim(raw.substr(i + 1));
    if (!rest.empty() && rest[0] != '#')
      throw_error(ErrorCode::kInvalidArgument, "{}: text after the string", where);
    return out;
  }
  return trim(raw.substr(0, raw.find('#')));
}

void expand_file(const std::string& path, const std::set<std::string>& env_names,
                 std::vector<std::string>& out) {
  std::ifstream f(path);
  if (!f) throw_error(ErrorCode::kInvalidArgument, "--config {}: cannot read the file", path);
  std::string line;
  for (int lineno = 1; std::getline(f, line); ++lineno) {
    const std::string where = path + ":" + std::to_string(lineno);
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') continue;  // [serve] and similar section headers
    const auto eq = line.find('=');
    if (eq == std::string::npos)
      throw_error(ErrorCode::kInvalidArgument, "{}: expected `name = value`", where);
    std::string key = trim(line.substr(0, eq));
    if (key.rfind("--", 0) == 0) key = key.substr(2);
    std::replace(key.begin(), key.end(), '_', '-');
    if (key.empty() || key == "config")
      throw_error(ErrorCode::kInvalidArgument, "{}: '{}' cannot be set in a config file", where,
                  key);
    const std::string value = parse_value(trim(line.substr(eq + 1)), where);
    if (env_names.count(env_name(key)) != 0) continue;  // the environment wins
    if (value == "true") {
      out.push_back("--" + key);
    } else if (value == "false") {
      continue;
    } else {
      out.push_back("--" + key);
      out.push_back(value);
    }
  }
}

}  // namespace

std::vector<std::string> expand_config_files(const std::vector<std::string>& argv,
                                             const std::set<std::string>& env_names) {
  // Where the subcommand's own arguments start: config flags are inserted there.
  std::vector<std::string> out;
  std::vector<std::string> configs;
  std::size_t insert_at = 0;
  for (std::size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a == "--config" && i + 1 < argv.size()) {
      configs.push_back(argv[i + 1]);
      ++i;
      continue;
    }
    if (a.rfind("--config=", 0) == 0) {
      configs.push_back(a.substr(9));
      continue;
    }
    out.push_back(a);
    if (insert_at == 0 && (a == "serve" || a == "generate")) insert_at = out.size();
  }
  if (configs.empty()) return argv;
  if (insert_at == 0)
    throw_error(ErrorCode::kInvalidArgument,
                "--config belongs after the subcommand (macserve serve --config FILE)");
  std::vector<std::string> expanded;
  for (const auto& c : configs) expand_file(c, env_names, expanded);
  out.insert(out.begin() + static_cast<std::ptrdiff_t>(insert_at), expanded.begin(),
             expanded.end());
  return out;
}

}  // namespace macserve::server
