#include "macserve/openai/request_ids.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <random>

namespace macserve::openai {

std::string random_hex(std::size_t bytes) {
  thread_local std::mt19937_64 rng{
      std::random_device{}() ^
      static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count())};
  static const char* digits = "0123456789abcdef";
  std::string s;
  s.reserve(bytes * 2);
  while (s.size() < bytes * 2) {
    uint64_t v = rng();
    for (int j = 0; j < 16 && s.size() < bytes * 2; ++j, v >>= 4) s.push_back(digits[v & 15]);
  }
  return s;
}

bool usable_request_id(std::string_view id) {
  if (id.empty() || id.size() > 256) return false;
  for (char c : id)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.' &&
        c != ':')
      return false;
  return true;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const std::size_t n = std::max(a.size(), b.size());
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

}  // namespace macserve::openai
