// Safe parsing of untrusted JSON bodies and typed field readers with OpenAI's error wording.
#include <cmath>
#include <limits>
#include <unordered_map>
#include <vector>

#include <fmt/format.h>

#include "json_fields.h"

namespace macserve::openai::detail {
namespace {

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null:
      return "null";
    case json::value_t::object:
      return "an object";
    case json::value_t::array:
      return "an array";
    case json::value_t::string:
      return "a string";
    case json::value_t::boolean:
      return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
      return "an integer";
    case json::value_t::number_float:
      return "a decimal";
    case json::value_t::binary:
      return "binary";
    case json::value_t::discarded:
      return "nothing";
  }
  return "an unknown type";
}

[[noreturn]] void wrong_type(const std::string& what, const char* expected, const json& v) {
  fail(fmt::format("Invalid type for '{}': expected {}, but got {} instead.", what, expected,
                   type_name(v)),
       what);
}

// Depth of [ and { outside strings; rejects before nlohmann recurses into a hostile body.
bool nesting_within(std::string_view body, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > max_depth) return false;
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  return true;
}

// SAX handler building an ordered_json in linear time: members are appended to the underlying
// vector directly, with a hash index per open object for duplicate keys (last one wins).
// A false positive of bugprone-exception-escape: nlohmann::json's destructor allocates to flatten
// nested values (std::bad_alloc there terminates); nothing in this struct throws.
// NOLINTNEXTLINE(bugprone-exception-escape)
struct OrderedBuilder {
  using Members = json::object_t::Container;
  struct Frame {
    json* value;
    std::unordered_map<std::string, std::size_t> index;  // objects: key -> member position
    std::string key;                                     // objects: the key of the next value
  };
  json root;
  std::vector<Frame> stack;
  std::string error;

  json* put(json&& v) {
    if (stack.empty()) {
      root = std::move(v);
      return &root;
    }
    Frame& f = stack.back();
    if (f.value->is_array()) {
      auto& arr = f.value->get_ref<json::array_t&>();
      arr.push_back(std::move(v));
      return &arr.back();
    }
    Members& members = f.value->get_ref<json::object_t&>();
    const auto [it, fresh] = f.index.emplace(f.key, members.size());
    if (!fresh) {
      members[it->second].second = std::move(v);
      return &members[it->second].second;
    }
    members.emplace_back(std::move(f.key), std::move(v));
    return &members.back().second;
  }
  bool null() { return put(json(nullptr)), true; }
  bool boolean(bool b) { return put(json(b)), true; }
  bool number_integer(json::number_integer_t x) { return put(json(x)), true; }
  bool number_unsigned(json::number_unsigned_t x) { return put(json(x)), true; }
  bool number_float(json::number_float_t x, const std::string&) { return put(json(x)), true; }
  bool string(std::string& s) { return put(json(std::move(s))), true; }
  bool binary(json::binary_t&) { return false; }  // never produced by the text parser
  bool start_object(std::size_t) {
    stack.push_back({put(json::object()), {}, {}});
    return true;
  }
  bool key(std::string& k) {
    stack.back().key = std::move(k);
    return true;
  }
  bool end_object() { return stack.pop_back(), true; }
  bool start_array(std::size_t) {
    stack.push_back({put(json::array()), {}, {}});
    return true;
  }
  bool end_array() { return stack.pop_back(), true; }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    error = e.what();
    return false;
  }
};

const json* find_field(const json& obj, const char* key) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

}  // namespace

json parse_body(std::string_view body) {
  if (!nesting_within(body, kMaxJsonDepth))
    fail(fmt::format("The JSON body is nested deeper than {} levels.", kMaxJsonDepth), "");
  OrderedBuilder builder;
  bool parsed = false;
  try {
    parsed = json::sax_parse(body.begin(), body.end(), &builder);
  } catch (const nlohmann::json::exception& e) {
    builder.error = e.what();
  }
  if (!parsed) {
    // "[json.exception.parse_error.101] parse error at ...": keep the readable part.
    std::string what = builder.error;
    if (const auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
    fail("We could not parse the JSON body of your request: " + sanitize_utf8(what), "");
  }
  json& j = builder.root;
  if (!j.is_object())
    fail(fmt::format("The request body must be a JSON object, but got {}.", type_name(j)), "");
  return std::move(j);
}

std::optional<bool> get_bool(const json& obj, const char* key) {
  const json* v = find_field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_boolean()) wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

int64_t as_int(const json& v, const std::string& what, int64_t lo, int64_t hi) {
  int64_t x = 0;
  bool in_range = true;
  if (v.is_number_integer() && !v.is_number_unsigned()) {
    x = v.get<int64_t>();
  } else if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    in_range = u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    x = in_range ? static_cast<int64_t>(u) : std::numeric_limits<int64_t>::max();
  } else if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!std::isfinite(d) || std::floor(d) != d) wrong_type(what, "an integer", v);
    in_range = d >= -9.2e18 && d <= 9.2e18;
    x = in_range
            ? static_cast<int64_t>(d)
            : (d < 0 ? std::numeric_limits<int64_t>::min() : std::numeric_limits<int64_t>::max());
  } else {
    wrong_type(what, "an integer", v);
  }
  if (!in_range && x > 0)  // beyond int64
    fail(fmt::format("Invalid '{}': integer above maximum value. Expected a value <= {}, but got "
                     "{} instead.",
                     what, hi, sanitize_utf8(v.dump())),
         what);
  if (!in_range)
    fail(fmt::format("Invalid '{}': integer below minimum value. Expected a value >= {}, but got "
                     "{} instead.",
                     what, lo, v.dump()),
         what);
  return check_int(what, Given<int64_t>{x, sanitize_utf8(v.dump())}, lo, hi);
}

std::optional<int64_t> get_int(const json& obj, const char* key, int64_t lo, int64_t hi) {
  const json* v = find_field(obj, key);
  if (v == nullptr) return std::nullopt;
  return as_int(*v, key, lo, hi);
}

std::optional<double> get_number(const json& obj, const char* key, double lo, double hi,
                                 bool lo_open) {
  const json* v = find_field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  return check_number(key, Given<double>{v->get<double>(), v->dump()}, lo, hi, lo_open);
}

std::optional<std::string> get_string(const json& obj, const char* key) {
  const json* v = find_field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) wrong_type(key, "a string", *v);
  return v->get<std::string>();
}

std::optional<Given<double>> get_given_number(const json& obj, const char* key) {
  const json* v = find_field(obj, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  return Given<double>{v->get<double>(), v->dump()};
}

Given<int64_t> as_given_int(const json& v, const std::string& what) {
  return {as_int(v, what, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()),
          sanitize_utf8(v.dump())};
}

std::optional<Given<int64_t>> get_given_int(const json& obj, const char* key) {
  const json* v = find_field(obj, key);
  if (v == nullptr) return std::nullopt;
  return as_given_int(*v, key);
}

void check_model(const json& body, const ServedModel& model) {
  const auto name = get_string(body, "model");
  if (!name || *name == model.name) return;
  ApiError e;
  e.status = 404;
  e.type = "not_found_error";
  e.param = "model";
  e.code = "model_not_found";
  e.message = fmt::format("The model `{}` does not exist.", sanitize_utf8(*name));
  throw ApiException{std::move(e)};
}

std::string dump(const json& j) { return dump_any(j); }

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<unsigned char>(s[i]);
    const int n = b < 0x80                   ? 1
                  : (b >= 0xC2 && b <= 0xDF) ? 2
                  : (b >= 0xE0 && b <= 0xEF) ? 3
                  : (b >= 0xF0 && b <= 0xF4) ? 4
                                             : 0;
    int ok = n > 0 ? 1 : 0;  // bytes of the maximal well-formed prefix
    for (int k = 1; k < n && i + k < s.size(); ++k) {
      const auto c = static_cast<unsigned char>(s[i + k]);
      unsigned char lo = 0x80, hi = 0xBF;
      if (k == 1 && b == 0xE0) lo = 0xA0;
      if (k == 1 && b == 0xED) hi = 0x9F;
      if (k == 1 && b == 0xF0) lo = 0x90;
      if (k == 1 && b == 0xF4) hi = 0x8F;
      if (c < lo || c > hi) break;
      ok = k + 1;
    }
    if (n > 0 && ok == n) {
      out.append(s.substr(i, n));
      i += n;
    } else {  // one U+FFFD per maximal ill-formed subpart, as Python's decode('replace')
      out += "\xEF\xBF\xBD";
      i += ok > 0 ? ok : 1;
    }
  }
  return out;
}

int64_t count_code_points(std::string_view s) {
  int64_t n = 0;
  for (const char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

}  // namespace macserve::openai::detail
