// Small text helpers shared by the server's command-line code.
#pragma once

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace macserve::server {

// `s` without leading and trailing whitespace (spaces, tabs, CR, LF, ...).
inline std::string trim(std::string_view s) {
  auto space = [](unsigned char c) { return std::isspace(c) != 0; };
  while (!s.empty() && space(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && space(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

}  // namespace macserve::server
