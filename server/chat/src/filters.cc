// The filter name table, shared filter helpers, and the conversion filters (int, float, round,
// default, tojson, ...).
#include "filters.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "interpreter.h"
#include "py_format.h"
#include "py_string.h"
#include "unicode.h"

namespace macserve::chat {

std::string soft_str(const Value& v) { return py_str(v); }

std::function<Value(const Value&)> attribute_getter(Interpreter& interp, const Value& attribute,
                                                    const Value* default_value) {
  std::vector<Value> parts;
  if (attribute.is_string()) {
    for (const std::string& part : py_split(attribute.as_string(), std::string("."), -1, false)) {
      const bool digits = py_isdigit(part) && part.size() < 18;
      parts.push_back(digits ? Value::integer(std::stoll(part)) : Value::string(part));
    }
  } else if (!attribute.is_none()) {
    parts.push_back(attribute);
  }
  std::optional<Value> fallback;
  if (default_value != nullptr) fallback = *default_value;
  return [&interp, parts, fallback](const Value& item) {
    Value v = item;
    for (const Value& part : parts) {
      v = get_item(interp, v, part);
      if (fallback && v.is_undefined()) v = *fallback;
    }
    return v;
  };
}

void stable_sort(std::vector<Value>& items, std::vector<Value>& keys, bool reverse) {
  // Python sorts reverse=True by reversing, sorting stably and reversing back, so equal keys
  // keep their original order either way.
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = reverse ? order.size() - 1 - i : i;
  std::vector<size_t> tmp(order.size());
  for (size_t width = 1; width < order.size(); width *= 2) {
    for (size_t lo = 0; lo < order.size(); lo += 2 * width) {
      const size_t mid = std::min(lo + width, order.size());
      const size_t hi = std::min(lo + 2 * width, order.size());
      size_t a = lo;
      size_t b = mid;
      size_t out = lo;
      while (a < mid && b < hi) {
        tmp[out++] = values_less(keys[order[b]], keys[order[a]]) ? order[b++] : order[a++];
      }
      while (a < mid) tmp[out++] = order[a++];
      while (b < hi) tmp[out++] = order[b++];
    }
    order.swap(tmp);
  }
  if (reverse) std::reverse(order.begin(), order.end());
  std::vector<Value> sorted_items;
  std::vector<Value> sorted_keys;
  sorted_items.reserve(order.size());
  sorted_keys.reserve(order.size());
  for (size_t i : order) {
    sorted_items.push_back(std::move(items[i]));
    sorted_keys.push_back(std::move(keys[i]));
  }
  items.swap(sorted_items);
  keys.swap(sorted_keys);
}

Value lower_if_string(const Value& v) {
  return v.is_string() ? Value::string(py_lower(v.as_string())) : v;
}

std::vector<Value> to_list(const Value& v) { return iterate(v); }

namespace {

// Python's float(str): surrounding whitespace, a sign, underscores between digits, inf/nan.
std::optional<double> parse_py_float(const std::string& text) {
  std::string s = py_strip(text, std::nullopt, true, true);
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_') {
      const bool ok = i > 0 && i + 1 < s.size() &&
                      std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
                      std::isdigit(static_cast<unsigned char>(s[i + 1]));
      if (!ok) return std::nullopt;
      continue;
    }
    clean.push_back(s[i]);
  }
  bool negative = false;
  size_t start = 0;
  if (!clean.empty() && (clean[0] == '+' || clean[0] == '-')) {
    negative = clean[0] == '-';
    start = 1;
  }
  if (start >= clean.size() || clean.find('(') != std::string::npos) return std::nullopt;
  double d = 0;
  const char* first = clean.data() + start;
  const char* last = clean.data() + clean.size();
  const auto res = std::from_chars(first, last, d);
  if (res.ptr != last) return std::nullopt;
  if (res.ec == std::errc::result_out_of_range) {
    const size_t e = clean.find_first_of("eE");
    d = e != std::string::npos && clean[e + 1] == '-' ? 0.0 : HUGE_VAL;
  } else if (res.ec != std::errc()) {
    return std::nullopt;
  }
  return negative ? -d : d;
}

// Python's int(str, base): whitespace, sign, optional 0x/0o/0b prefix matching the base,
// underscores between digits.
std::optional<int64_t> parse_py_int(const std::string& text, int64_t base) {
  std::string s = py_strip(text, std::nullopt, true, true);
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.erase(0, 1);
  }
  if (s.size() > 2 && s[0] == '0') {
    const char p = static_cast<char>(s[1] | 0x20);
    if ((p == 'x' && base == 16) || (p == 'o' && base == 8) || (p == 'b' && base == 2)) {
      s.erase(0, 2);
      if (!s.empty() && s[0] == '_') s.erase(0, 1);
    }
  }
  std::string clean;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '_' && i > 0 && i + 1 < s.size() && s[i - 1] != '_' && s[i + 1] != '_') continue;
    clean.push_back(s[i]);
  }
  if (clean.empty() || base < 2 || base > 36) return std::nullopt;
  int64_t v = 0;
  const auto res =
      std::from_chars(clean.data(), clean.data() + clean.size(), v, static_cast<int>(base));
  if (res.ptr != clean.data() + clean.size()) return std::nullopt;
  if (res.ec == std::errc::result_out_of_range) {
    raise(ErrorKind::kOverflowError, "integer does not fit in 64 bits");
  }
  if (res.ec != std::errc()) return std::nullopt;
  return negative ? -v : v;
}

int64_t float_to_int(double d) {
  if (std::isnan(d)) raise(ErrorKind::kValueError, "cannot convert float NaN to integer");
  if (std::isinf(d) || std::fabs(d) >= 9.2e18) {
    raise(ErrorKind::kOverflowError, "cannot convert float infinity to integer");
  }
  return static_cast<int64_t>(d);
}

Value filter_abs(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("abs", args, {});
  if (v.is_integral()) {
    if (v.as_int() == INT64_MIN) raise(ErrorKind::kOverflowError, "integer overflow");
    return Value::integer(std::llabs(v.as_int()));
  }
  if (v.is_float()) return Value::real(std::fabs(v.as_float()));
  raise(ErrorKind::kTypeError, "bad operand type for abs(): '{}'", type_name(v));
}

Value filter_attr(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("attr", args, {"name"});
  const std::string name = r.get_string(0, "");
  if (v.is_undefined()) raise_undefined(v);
  if (v.is_object()) return v.as_object().get_attr(name);
  if ((v.is_string() || v.is_list() || v.is_dict()) && is_method_name(v, name)) {
    return make_bound_method(v, name);
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", type_name(v), name));
}

Value filter_default(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("default", args, {"default_value", "boolean"});
  if (v.is_undefined() || (r.get_bool(1, false) && !v.truthy())) {
    return r.get_or(0, Value::string(""));
  }
  return v;
}

Value filter_float(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("float", args, {"default"});
  if (v.is_undefined()) raise_undefined(v);
  if (v.is_number()) return Value::real(v.as_float());
  if (v.is_string()) {
    if (const auto d = parse_py_float(v.as_string())) return Value::real(*d);
  }
  return r.get_or(0, Value::real(0.0));
}

Value filter_int(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("int", args, {"default", "base"});
  if (v.is_undefined()) raise_undefined(v);
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.is_float()) return Value::integer(float_to_int(v.as_float()));
  if (v.is_string()) {
    if (const auto i = parse_py_int(v.as_string(), r.get_int(1, 10))) return Value::integer(*i);
    // Jinja's quirk: "42.23"|int gives 42 through float().
    if (const auto d = parse_py_float(v.as_string())) {
      if (std::isfinite(*d) && std::fabs(*d) < 9.2e18)
        return Value::integer(static_cast<int64_t>(*d));
    }
  }
  return r.get_or(0, Value::integer(0));
}

// round(x, n) as Python computes it: the correctly rounded decimal, ties to even.
double py_round(double x, int64_t ndigits) {
  if (!std::isfinite(x)) return x;
  if (ndigits > 300) return x;
  if (ndigits >= 0) {
    char buf[512];
    std::snprintf(buf, sizeof buf, "%.*f", static_cast<int>(ndigits), x);
    for (char* p = buf; *p != '\0'; ++p) {
      if (*p == ',') *p = '.';  // a non-C numeric locale
    }
    double out = 0;
    std::from_chars(buf, buf + std::strlen(buf), out);
    return out;
  }
  if (ndigits < -308) return std::copysign(0.0, x);
  const double pow10 = std::pow(10.0, static_cast<double>(-ndigits));
  const double y = x / pow10;
  double z = std::round(y);
  if (std::fabs(y - z) == 0.5) z = 2.0 * std::round(y / 2.0);
  return z * pow10;
}

Value filter_round(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("round", args, {"precision", "method"});
  const int64_t precision = r.get_int(0, 0);
  const std::string method = r.get_string(1, "common");
  if (method != "common" && method != "ceil" && method != "floor") {
    raise(ErrorKind::kRuntimeError, "method must be common, ceil or floor");
  }
  if (!v.is_number()) {
    raise(ErrorKind::kTypeError, "type {} doesn't define __round__ method", type_name(v));
  }
  if (method == "common") {
    if (v.is_integral() && precision >= 0) return Value::integer(v.as_int());
    const double rounded = py_round(v.as_float(), precision);
    if (v.is_integral()) return Value::integer(float_to_int(rounded));
    return Value::real(rounded);
  }
  const double scale = std::pow(10.0, static_cast<double>(precision));
  const double scaled = v.as_float() * scale;
  return Value::real((method == "ceil" ? std::ceil(scaled) : std::floor(scaled)) / scale);
}

Value filter_string(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("string", args, {});
  return Value::string(soft_str(v));
}

// transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None,
// sort_keys=False), unlike Jinja's HTML-safe one.
Value filter_tojson(Interpreter& interp, const Value& v, Arguments& args) {
  const ArgReader r("tojson", args, {"ensure_ascii", "indent", "separators", "sort_keys"});
  JsonOptions o;
  o.ensure_ascii = r.get_bool(0, false);
  const Value indent = r.get_or(1, Value::none());
  if (indent.is_string()) {
    o.indent = indent.as_string();
  } else if (indent.is_integral()) {
    interp.check_size(static_cast<size_t>(std::max<int64_t>(0, indent.as_int())));
    o.indent = std::string(static_cast<size_t>(std::max<int64_t>(0, indent.as_int())), ' ');
  } else if (!indent.is_none()) {
    raise(ErrorKind::kTypeError, "can't multiply sequence by non-int of type '{}'",
          type_name(indent));
  }
  o.item_separator = o.indent ? "," : ", ";
  const Value separators = r.get_or(2, Value::none());
  if (!separators.is_none()) {
    const std::vector<Value> parts = iterate(separators);
    if (parts.size() != 2 || !parts[0].is_string() || !parts[1].is_string()) {
      raise(ErrorKind::kValueError, "separators must be a pair of strings");
    }
    o.item_separator = parts[0].as_string();
    o.key_separator = parts[1].as_string();
  }
  o.sort_keys = r.get_bool(3, false);
  return Value::string(py_json_dumps(v, o, interp.max_bytes()));
}

Value filter_safe(Interpreter&, const Value& v, Arguments& args) {
  const ArgReader r("safe", args, {});
  return Value::string(soft_str(v));
}

struct FilterEntry {
  std::string_view name;
  FilterFn fn;
};

constexpr FilterEntry kFilters[] = {
    {"abs", filter_abs},           {"attr", filter_attr},
    {"batch", filter_batch},       {"capitalize", filter_capitalize},
    {"center", filter_center},     {"count", filter_length},
    {"d", filter_default},         {"default", filter_default},
    {"dictsort", filter_dictsort}, {"e", filter_escape},
    {"escape", filter_escape},     {"first", filter_first},
    {"float", filter_float},       {"forceescape", filter_escape},
    {"format", filter_format},     {"indent", filter_indent},
    {"int", filter_int},           {"items", filter_items},
    {"join", filter_join},         {"last", filter_last},
    {"length", filter_length},     {"list", filter_list},
    {"lower", filter_lower},       {"map", filter_map},
    {"max", filter_max},           {"min", filter_min},
    {"reject", filter_reject},     {"rejectattr", filter_rejectattr},
    {"replace", filter_replace},   {"reverse", filter_reverse},
    {"round", filter_round},       {"safe", filter_safe},
    {"select", filter_select},     {"selectattr", filter_selectattr},
    {"sort", filter_sort},         {"string", filter_string},
    {"sum", filter_sum},           {"title", filter_title},
    {"tojson", filter_tojson},     {"trim", filter_trim},
    {"truncate", filter_truncate}, {"unique", filter_unique},
    {"upper", filter_upper},       {"wordcount", filter_wordcount},
};

constexpr std::string_view kUnsupportedFilters[] = {
    "filesizeformat", "groupby",   "pprint", "random",   "slice",
    "striptags",      "urlencode", "urlize", "wordwrap", "xmlattr",
};

}  // namespace

FilterFn find_filter(std::string_view name) {
  for (const FilterEntry& e : kFilters) {
    if (e.name == name) return e.fn;
  }
  return nullptr;
}

bool is_unsupported_filter(std::string_view name) {
  return std::find(std::begin(kUnsupportedFilters), std::end(kUnsupportedFilters), name) !=
         std::end(kUnsupportedFilters);
}

}  // namespace macserve::chat
