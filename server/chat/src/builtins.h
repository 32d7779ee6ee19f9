// The built-in vocabulary templates call into: Jinja's filters and tests, Python's str/dict/list
// methods, and the globals transformers provides (range, namespace, dict, raise_exception,
// strftime_now). Filters and tests are looked up when parsing, as Jinja rejects unknown ones when
// it compiles a template.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>
#include <vector>

#include "value.h"

namespace macserve::chat {

using FilterFn = Value (*)(Interpreter& interp, const Value& input, Arguments& args);
using TestFn = bool (*)(Interpreter& interp, const Value& input, Arguments& args);

FilterFn find_filter(std::string_view name);  // nullptr when unknown
TestFn find_test(std::string_view name);      // nullptr when unknown
// Jinja filters this renderer does not implement (the parser names them in its error).
bool is_unsupported_filter(std::string_view name);

// Python methods of str, list and dict values. The mutating list/dict methods (append, update,
// ...) are not among them: Jinja's immutable sandbox refuses them, and so does get_attribute.
bool is_method_name(const Value& self, const std::string& name);
Value call_method(Interpreter& interp, const Value& self, const std::string& name, Arguments& args);
// The object a bare `obj.method` evaluates to (so `{% set f = s.strip %}{{ f() }}` works).
Value make_bound_method(const Value& self, const std::string& name);

// Globals, looked up after the render context's own keys.
Value find_global(const std::string& name);

// Binds call arguments to named parameters the way Python does: positional first, then by
// keyword; too many arguments or unknown keywords are a TypeError naming the function.
class ArgReader {
 public:
  ArgReader(std::string_view function, const Arguments& args,
            std::initializer_list<std::string_view> params);
  bool has(size_t i) const { return bound_[i] != nullptr; }
  const Value& get(size_t i) const;  // TypeError when the argument is missing
  Value get_or(size_t i, const Value& fallback) const { return has(i) ? *bound_[i] : fallback; }
  int64_t get_int(size_t i, int64_t fallback) const;
  std::string get_string(size_t i, std::string fallback) const;  // requires str (or None)
  bool get_bool(size_t i, bool fallback) const;                  // Python truthiness

 private:
  std::string_view function_;
  std::vector<std::string_view> params_;
  std::vector<const Value*> bound_;
};

}  // namespace macserve::chat
