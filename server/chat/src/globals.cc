// Globals of transformers' chat template environment, and the Python-style argument binder the
// built-ins share.
#include <algorithm>
#include <ctime>

#include "bounds.h"
#include "builtins.h"
#include "interpreter.h"
#include "objects.h"
#include "py_format.h"

namespace macserve::chat {

// ---- ArgReader ---------------------------------------------------------------------------

ArgReader::ArgReader(std::string_view function, const Arguments& args,
                     std::initializer_list<std::string_view> params)
    : function_(function), params_(params), bound_(params.size(), nullptr) {
  if (args.positional.size() > params_.size()) {
    raise(ErrorKind::kTypeError, "{}() takes at most {} arguments ({} given)", function_,
          params_.size(), args.positional.size());
  }
  for (size_t i = 0; i < args.positional.size(); ++i) bound_[i] = &args.positional[i];
  for (const auto& [name, value] : args.keyword) {
    const auto it = std::find(params_.begin(), params_.end(), name);
    if (it == params_.end()) {
      raise(ErrorKind::kTypeError, "{}() got an unexpected keyword argument '{}'", function_, name);
    }
    const auto i = static_cast<size_t>(it - params_.begin());
    if (bound_[i] != nullptr) {
      raise(ErrorKind::kTypeError, "{}() got multiple values for argument '{}'", function_, name);
    }
    bound_[i] = &value;
  }
}

const Value& ArgReader::get(size_t i) const {
  if (bound_[i] == nullptr) {
    raise(ErrorKind::kTypeError, "{}() missing required argument '{}'", function_, params_[i]);
  }
  return *bound_[i];
}

int64_t ArgReader::get_int(size_t i, int64_t fallback) const {
  if (!has(i) || bound_[i]->is_none()) return fallback;
  if (!bound_[i]->is_integral()) {
    raise(ErrorKind::kTypeError, "{}() argument '{}' must be an integer, not {}", function_,
          params_[i], type_name(*bound_[i]));
  }
  return bound_[i]->as_int();
}

std::string ArgReader::get_string(size_t i, std::string fallback) const {
  if (!has(i) || bound_[i]->is_none()) return fallback;
  if (!bound_[i]->is_string()) {
    raise(ErrorKind::kTypeError, "{}() argument '{}' must be str, not {}", function_, params_[i],
          type_name(*bound_[i]));
  }
  return bound_[i]->as_string();
}

bool ArgReader::get_bool(size_t i, bool fallback) const {
  return has(i) ? bound_[i]->truthy() : fallback;
}

namespace {

// ---- range, dict, namespace --------------------------------------------------------------

int64_t range_arg(const Value& v) {
  if (!v.is_integral()) {
    raise(ErrorKind::kTypeError, "'{}' object cannot be interpreted as an integer", type_name(v));
  }
  return v.as_int();
}

Value global_range(Interpreter& interp, Arguments& args) {
  if (!args.keyword.empty()) raise(ErrorKind::kTypeError, "range() takes no keyword arguments");
  const size_t n = args.positional.size();
  if (n < 1 || n > 3) raise(ErrorKind::kTypeError, "range expected 1 to 3 arguments, got {}", n);
  const int64_t start = n == 1 ? 0 : range_arg(args.positional[0]);
  const int64_t stop = range_arg(args.positional[n == 1 ? 0 : 1]);
  const int64_t step = n == 3 ? range_arg(args.positional[2]) : 1;
  if (step == 0) raise(ErrorKind::kValueError, "range() arg 3 must not be zero");
  const __int128 span =
      step > 0 ? static_cast<__int128>(stop) - start : static_cast<__int128>(start) - stop;
  const __int128 abs_step = step > 0 ? static_cast<__int128>(step) : -static_cast<__int128>(step);
  const __int128 count = span <= 0 ? 0 : (span + abs_step - 1) / abs_step;
  if (count > kMaxRange) {
    raise(ErrorKind::kOverflowError,
          "Range too big. The sandbox blocks ranges larger than MAX_RANGE ({}).", kMaxRange);
  }
  interp.charge(static_cast<uint64_t>(count) / 8);
  std::vector<Value> items;
  items.reserve(static_cast<size_t>(count));
  for (__int128 k = 0; k < count; ++k) {
    items.push_back(Value::integer(static_cast<int64_t>(start + k * step)));
  }
  return Value::list(std::move(items));
}

// dict(*args, **kwargs) as Python builds it.
std::shared_ptr<DictData> build_dict(std::string_view function, const Arguments& args) {
  auto dict = std::make_shared<DictData>();
  if (args.positional.size() > 1) {
    raise(ErrorKind::kTypeError, "{} expected at most 1 argument, got {}", function,
          args.positional.size());
  }
  if (args.positional.size() == 1) {
    const Value& source = args.positional[0];
    if (source.is_dict()) {
      for (const auto& [k, v] : source.as_dict().items()) dict->set(k, v);
    } else {
      const std::vector<Value> pairs = iterate(source);
      for (size_t i = 0; i < pairs.size(); ++i) {
        const std::vector<Value> kv = iterate(pairs[i]);
        if (kv.size() != 2) {
          raise(ErrorKind::kValueError,
                "dictionary update sequence element #{} has length {}; 2 is required", i,
                kv.size());
        }
        dict->set(kv[0], kv[1]);
      }
    }
  }
  for (const auto& [k, v] : args.keyword) dict->set(Value::string(k), v);
  return dict;
}

Value global_dict(Interpreter& /*interp*/, Arguments& args) {
  return Value::dict(build_dict("dict", args));
}

Value global_namespace(Interpreter& interp, Arguments& args) {
  const auto attrs = build_dict("namespace", args);
  auto ns = std::make_shared<NamespaceObject>();
  for (const auto& [k, v] : attrs->items()) {
    if (!k.is_string()) raise(ErrorKind::kTypeError, "namespace attribute names must be strings");
    ns->set_attr(k.as_string(), v);
  }
  interp.track(ns);
  return Value::object(std::move(ns));
}

Value global_raise_exception(Interpreter& /*interp*/, Arguments& args) {
  const ArgReader r("raise_exception", args, {"message"});
  raise(ErrorKind::kRaised, "{}", py_str(r.get(0)));
}

// datetime.strftime on a naive datetime: Python itself expands %f, %z and %Z, the C library
// the rest (which is why glibc extensions such as %-d work in Python on Linux too).
Value global_strftime_now(Interpreter& interp, Arguments& args) {
  const ArgReader r("strftime_now", args, {"format"});
  const std::string format = r.get_string(0, "");
  if (format.size() > 1024) raise(ErrorKind::kValueError, "strftime format is too long");
  std::string expanded;
  for (size_t i = 0; i < format.size(); ++i) {
    if (format[i] == '%' && i + 1 < format.size()) {
      const char c = format[i + 1];
      if (c == 'f' || c == 'z' || c == 'Z') {
        if (c == 'f') expanded += "000000";
        ++i;
        continue;
      }
      expanded += format.substr(i, 2);
      ++i;
      continue;
    }
    expanded.push_back(format[i]);
  }
  if (expanded.empty()) return Value::string(std::string());
  const std::tm tm = interp.now();
  std::string out(expanded.size() * 8 + 256, '\0');
  const size_t n = std::strftime(out.data(), out.size(), expanded.c_str(), &tm);
  out.resize(n);
  return Value::string(std::move(out));
}

}  // namespace

Value find_global(const std::string& name) {
  static const auto kRange = std::make_shared<FunctionObject>("range", &global_range);
  static const auto kDict = std::make_shared<FunctionObject>("dict", &global_dict);
  static const auto kNamespace = std::make_shared<FunctionObject>("namespace", &global_namespace);
  static const auto kRaise =
      std::make_shared<FunctionObject>("raise_exception", &global_raise_exception);
  static const auto kStrftime =
      std::make_shared<FunctionObject>("strftime_now", &global_strftime_now);
  if (name == "range") return Value::object(kRange);
  if (name == "dict") return Value::object(kDict);
  if (name == "namespace") return Value::object(kNamespace);
  if (name == "raise_exception") return Value::object(kRaise);
  if (name == "strftime_now") return Value::object(kStrftime);
  return Value();
}

}  // namespace macserve::chat
