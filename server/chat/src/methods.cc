// Python methods on str, dict and list values. Mutating list/dict methods are absent on purpose:
// transformers renders in Jinja's ImmutableSandboxedEnvironment, which refuses them.
#include <algorithm>

#include "builtins.h"
#include "interpreter.h"
#include "objects.h"
#include "py_format.h"
#include "py_string.h"
#include "string_format.h"
#include "unicode.h"

namespace macserve::chat {
namespace {

using Method = Value (*)(Interpreter&, const Value&, Arguments&);

std::optional<std::string> optional_string(const ArgReader& r, size_t i) {
  if (!r.has(i) || r.get(i).is_none()) return std::nullopt;
  return r.get_string(i, "");
}

Value string_list(const std::vector<std::string>& parts) {
  std::vector<Value> items;
  items.reserve(parts.size());
  for (const auto& p : parts) items.push_back(Value::string(p));
  return Value::list(std::move(items));
}

template <bool kLeft, bool kRight>
Value str_strip(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r("strip", args, {"chars"});
  return Value::string(py_strip(self.as_string(), optional_string(r, 0), kLeft, kRight));
}

template <bool kFromRight>
Value str_split(Interpreter& interp, const Value& self, Arguments& args) {
  const ArgReader r(kFromRight ? "rsplit" : "split", args, {"sep", "maxsplit"});
  const auto parts =
      py_split(self.as_string(), optional_string(r, 0), r.get_int(1, -1), kFromRight);
  interp.charge(parts.size() / 8);
  return string_list(parts);
}

Value str_splitlines(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r("splitlines", args, {"keepends"});
  return string_list(py_splitlines(self.as_string(), r.get_bool(0, false)));
}

// startswith/endswith take a str or a tuple of str.
template <bool kEnd>
Value str_affix(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r(kEnd ? "endswith" : "startswith", args, {"prefix", "start", "end"});
  if (r.has(1) || r.has(2)) raise(ErrorKind::kValueError, "start/end arguments are not supported");
  const Value& arg = r.get(0);
  std::vector<Value> options =
      arg.is_list() && arg.as_list().is_tuple ? arg.as_list().items : std::vector<Value>{arg};
  const std::string& s = self.as_string();
  for (const Value& o : options) {
    if (!o.is_string()) {
      raise(ErrorKind::kTypeError, "{} first arg must be str or a tuple of str, not {}",
            kEnd ? "endswith" : "startswith", type_name(o));
    }
    if (kEnd ? s.ends_with(o.as_string()) : s.starts_with(o.as_string())) {
      return Value::boolean(true);
    }
  }
  return Value::boolean(false);
}

Value str_case(const Value& self, Arguments& args, const char* name,
               std::string (*fn)(std::string_view)) {
  const ArgReader r(name, args, {});
  return Value::string(fn(self.as_string()));
}

Value str_upper(Interpreter&, const Value& s, Arguments& a) {
  return str_case(s, a, "upper", py_upper);
}
Value str_lower(Interpreter&, const Value& s, Arguments& a) {
  return str_case(s, a, "lower", py_lower);
}
Value str_title(Interpreter&, const Value& s, Arguments& a) {
  return str_case(s, a, "title", py_title);
}
Value str_capitalize(Interpreter&, const Value& s, Arguments& a) {
  return str_case(s, a, "capitalize", py_capitalize);
}

Value str_replace(Interpreter& interp, const Value& self, Arguments& args) {
  const ArgReader r("replace", args, {"old", "new", "count"});
  return Value::string(py_replace(self.as_string(), r.get_string(0, ""), r.get_string(1, ""),
                                  r.get_int(2, -1), interp.max_bytes()));
}

template <bool kFromRight, bool kRaise>
Value str_find(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r(kFromRight ? "rfind" : "find", args, {"sub"});
  const int64_t i = py_find(self.as_string(), r.get_string(0, ""), kFromRight);
  if (kRaise && i < 0) raise(ErrorKind::kValueError, "substring not found");
  return Value::integer(i);
}

Value str_count(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r("count", args, {"sub"});
  return Value::integer(py_count(self.as_string(), r.get_string(0, "")));
}

Value str_join(Interpreter& interp, const Value& self, Arguments& args) {
  const ArgReader r("join", args, {"iterable"});
  const std::vector<Value> items = iterate(r.get(0));
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (!items[i].is_string()) {
      raise(ErrorKind::kTypeError, "sequence item {}: expected str instance, {} found", i,
            type_name(items[i]));
    }
    if (i > 0) out += self.as_string();
    out += items[i].as_string();
    interp.check_size(out.size());
  }
  return Value::string(std::move(out));
}

Value str_format(Interpreter& interp, const Value& self, Arguments& args) {
  return Value::string(brace_format(interp, self.as_string(), args));
}

template <bool (*kTest)(std::string_view)>
Value str_is(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r("is", args, {});
  return Value::boolean(kTest(self.as_string()));
}

template <bool kSuffix>
Value str_remove_affix(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r(kSuffix ? "removesuffix" : "removeprefix", args, {"affix"});
  const std::string affix = r.get_string(0, "");
  const std::string& s = self.as_string();
  if (kSuffix && s.ends_with(affix)) return Value::string(s.substr(0, s.size() - affix.size()));
  if (!kSuffix && s.starts_with(affix)) return Value::string(s.substr(affix.size()));
  return self;
}

template <char kAlign>
Value str_pad(Interpreter& interp, const Value& self, Arguments& args) {
  const ArgReader r(kAlign == '^'   ? "center"
                    : kAlign == '<' ? "ljust"
                                    : "rjust",
                    args, {"width", "fillchar"});
  const std::string fill = r.get_string(1, " ");
  if (utf8_length(fill) != 1) {
    raise(ErrorKind::kTypeError, "The fill character must be exactly one character long");
  }
  return Value::string(py_pad(self.as_string(), r.get_int(0, 0), fill, kAlign, interp.max_bytes()));
}

Value str_zfill(Interpreter& interp, const Value& self, Arguments& args) {
  const ArgReader r("zfill", args, {"width"});
  const std::string& s = self.as_string();
  const bool sign = !s.empty() && (s[0] == '+' || s[0] == '-');
  std::string padded = py_pad(sign ? s.substr(1) : s, r.get_int(0, 0) - (sign ? 1 : 0), "0", '>',
                              interp.max_bytes());
  return Value::string(sign ? s.substr(0, 1) + padded : padded);
}

Value dict_items(Interpreter& interp, const Value& self, Arguments& args) {
  const ArgReader r("items", args, {});
  std::vector<Value> items;
  for (const auto& [k, v] : self.as_dict().items()) items.push_back(Value::list({k, v}, true));
  interp.charge(items.size() / 8);
  return Value::list(std::move(items));
}

template <bool kValues>
Value dict_keys_or_values(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r(kValues ? "values" : "keys", args, {});
  std::vector<Value> items;
  for (const auto& [k, v] : self.as_dict().items()) items.push_back(kValues ? v : k);
  return Value::list(std::move(items));
}

Value dict_get(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r("get", args, {"key", "default"});
  const Value* v = self.as_dict().find(r.get(0));
  return v != nullptr ? *v : r.get_or(1, Value::none());
}

Value copy_self(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r("copy", args, {});
  return self;
}

Value list_count(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r("count", args, {"value"});
  const auto& items = self.as_list().items;
  return Value::integer(std::count_if(items.begin(), items.end(),
                                      [&](const Value& v) { return values_equal(v, r.get(0)); }));
}

Value list_index(Interpreter&, const Value& self, Arguments& args) {
  const ArgReader r("index", args, {"value"});
  const auto& items = self.as_list().items;
  for (size_t i = 0; i < items.size(); ++i) {
    if (values_equal(items[i], r.get(0))) return Value::integer(static_cast<int64_t>(i));
  }
  raise(ErrorKind::kValueError, "{} is not in list", py_repr(r.get(0)));
}

struct MethodEntry {
  std::string_view name;
  Method fn;
};

constexpr MethodEntry kStrMethods[] = {
    {"strip", str_strip<true, true>},
    {"lstrip", str_strip<true, false>},
    {"rstrip", str_strip<false, true>},
    {"split", str_split<false>},
    {"rsplit", str_split<true>},
    {"splitlines", str_splitlines},
    {"startswith", str_affix<false>},
    {"endswith", str_affix<true>},
    {"upper", str_upper},
    {"lower", str_lower},
    {"casefold", str_lower},
    {"title", str_title},
    {"capitalize", str_capitalize},
    {"replace", str_replace},
    {"find", str_find<false, false>},
    {"rfind", str_find<true, false>},
    {"index", str_find<false, true>},
    {"rindex", str_find<true, true>},
    {"count", str_count},
    {"join", str_join},
    {"format", str_format},
    {"isspace", str_is<py_isspace>},
    {"isdigit", str_is<py_isdigit>},
    {"isnumeric", str_is<py_isdigit>},
    {"isdecimal", str_is<py_isdigit>},
    {"isalpha", str_is<py_isalpha>},
    {"isalnum", str_is<py_isalnum>},
    {"islower", str_is<py_islower>},
    {"isupper", str_is<py_isupper>},
    {"removeprefix", str_remove_affix<false>},
    {"removesuffix", str_remove_affix<true>},
    {"center", str_pad<'^'>},
    {"ljust", str_pad<'<'>},
    {"rjust", str_pad<'>'>},
    {"zfill", str_zfill},
};

constexpr MethodEntry kDictMethods[] = {
    {"items", dict_items},
    {"keys", dict_keys_or_values<false>},
    {"values", dict_keys_or_values<true>},
    {"get", dict_get},
    {"copy", copy_self},
};

constexpr MethodEntry kListMethods[] = {
    {"count", list_count},
    {"index", list_index},
    {"copy", copy_self},
};

Method find_method(const Value& self, std::string_view name) {
  const auto lookup = [&](const auto& table) -> Method {
    for (const MethodEntry& e : table) {
      if (e.name == name) return e.fn;
    }
    return nullptr;
  };
  if (self.is_string()) return lookup(kStrMethods);
  if (self.is_dict()) return lookup(kDictMethods);
  if (self.is_sequence() && self.is_list()) return lookup(kListMethods);
  return nullptr;
}

}  // namespace

bool is_method_name(const Value& self, const std::string& name) {
  return find_method(self, name) != nullptr;
}

Value call_method(Interpreter& interp, const Value& self, const std::string& name,
                  Arguments& args) {
  const Method m = find_method(self, name);
  if (m == nullptr) {
    raise(ErrorKind::kUndefinedError, "'{} object' has no attribute '{}'", type_name(self), name);
  }
  return m(interp, self, args);
}

Value make_bound_method(const Value& self, const std::string& name) {
  return Value::object(std::make_shared<BoundMethodObject>(self, name));
}

}  // namespace macserve::chat
