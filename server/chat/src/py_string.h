// Python str methods on UTF-8 text, shared by the str methods templates call (s.split(...)) and
// the Jinja filters built on them (trim, replace, center, ...). Indexes and widths count code
// points, as Python's do.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace macserve::chat {

// str.strip/lstrip/rstrip: whitespace when chars is nullopt, else any code point of chars.
std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                     bool right);
// str.split / str.rsplit; sep nullopt splits on whitespace runs. maxsplit < 0 means no limit.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep,
                                  int64_t maxsplit, bool from_right);
std::vector<std::string> py_splitlines(std::string_view s, bool keepends);
// str.replace; max_bytes bounds the result before it is built.
std::string py_replace(std::string_view s, std::string_view old, std::string_view repl,
                       int64_t count, size_t max_bytes);
// str.find / str.rfind: code point index, or -1.
int64_t py_find(std::string_view s, std::string_view sub, bool from_right);
int64_t py_count(std::string_view s, std::string_view sub);
// str.center / ljust / rjust with a one-character fill.
std::string py_pad(std::string_view s, int64_t width, std::string_view fill, char align,
                   size_t max_bytes);
bool py_isspace(std::string_view s);
bool py_isdigit(std::string_view s);
bool py_isalpha(std::string_view s);
bool py_isalnum(std::string_view s);
bool py_islower(std::string_view s);
bool py_isupper(std::string_view s);

}  // namespace macserve::chat
