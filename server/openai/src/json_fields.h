// Internal: safe JSON parsing of untrusted bodies and typed field readers that turn every wrong
// type or out-of-range value into an ApiError naming the field (OpenAI's `param`).
#pragma once

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "macserve/openai/protocol.h"
#include "macserve/openai/request_fields.h"

namespace macserve::openai::detail {

// Ordered: key order reaches chat templates as the client wrote it (tojson shows it, as in
// Python). Built by a linear-time parser (ordered_json's own insert is quadratic in the keys).
using json = nlohmann::ordered_json;

using openai::ApiException;
using openai::fail;

// Runs f() and turns whatever it throws into the ApiError the public functions return: an
// ApiException as it is, macserve::Error(kInvalidArgument) as a 400, anything else as a 500.
ApiError error_from_exception(std::exception_ptr e);
template <class R, class F>
std::variant<R, ApiError> guarded(F&& f) {
  try {
    return f();
  } catch (...) {
    return error_from_exception(std::current_exception());
  }
}

// Nesting deeper than this is rejected before nlohmann builds a DOM (hostile bodies).
inline constexpr int kMaxJsonDepth = 64;

// The body as a JSON object; 400 for invalid JSON, invalid UTF-8, too deep nesting or a
// non-object body. Duplicate keys: the last one wins (Python's json).
json parse_body(std::string_view body);

// Field readers: absent or null -> nullopt (OpenAI treats null as "not given").
std::optional<bool> get_bool(const json& obj, const char* key);
// Integers: JSON integers, or floats with no fractional part (pydantic's lax mode); the value
// must lie in [lo, hi].
std::optional<int64_t> get_int(const json& obj, const char* key, int64_t lo, int64_t hi);
// Any finite number in [lo, hi] (open bounds when lo_open/hi_open).
std::optional<double> get_number(const json& obj, const char* key, double lo, double hi,
                                 bool lo_open = false);
std::optional<std::string> get_string(const json& obj, const char* key);
// Type checks only (ranges are checked by request_fields.h): a number / an int64 and its JSON text.
std::optional<Given<double>> get_given_number(const json& obj, const char* key);
std::optional<Given<int64_t>> get_given_int(const json& obj, const char* key);
Given<int64_t> as_given_int(const json& v, const std::string& what);
// An integer JSON value (`what` names it in errors) in [lo, hi].
int64_t as_int(const json& v, const std::string& what, int64_t lo, int64_t hi);

// "model": absent/null ok, else must equal the served name (404 model_not_found).
void check_model(const json& body, const ServedModel& model);

// Serialises without ever throwing on invalid UTF-8 (replaced by U+FFFD).
std::string dump(const json& j);
template <class J>
std::string dump_any(const J& j) {
  return j.dump(-1, ' ', false, nlohmann::detail::error_handler_t::replace);
}

// Valid UTF-8 with invalid sequences replaced by U+FFFD.
std::string sanitize_utf8(std::string_view s);
// Number of Unicode code points (Python's len()) of valid UTF-8.
int64_t count_code_points(std::string_view s);

}  // namespace macserve::openai::detail
