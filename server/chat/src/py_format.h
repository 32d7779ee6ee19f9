// Python's text forms of values, byte for byte: str() (what {{ x }} prints), repr() (how lists
// and dicts print their items) and json.dumps() (what transformers' tojson filter returns).
#pragma once

#include <limits>
#include <optional>
#include <string>

#include "value.h"

namespace macserve::chat {

// max_bytes bounds the text of lists and dicts, which can be far larger than the value's memory.
std::string py_str(const Value& v, size_t max_bytes = std::numeric_limits<size_t>::max());
std::string py_repr(const Value& v, size_t max_bytes = std::numeric_limits<size_t>::max());
std::string py_repr_string(const std::string& s);
std::string py_float_repr(double d);  // repr(float): shortest round-trip digits

struct JsonOptions {
  bool ensure_ascii = false;
  std::optional<std::string> indent;  // nullopt: one line
  std::string item_separator = ", ";
  std::string key_separator = ": ";
  bool sort_keys = false;
};

// json.dumps(v, ...). Throws TypeError for values JSON cannot hold (undefined, objects). The
// caller bounds the size: max_bytes stops a runaway indent before it allocates.
std::string py_json_dumps(const Value& v, const JsonOptions& options, size_t max_bytes);

}  // namespace macserve::chat
