// Jinja's tests (`x is defined`, `n is divisibleby 3`, ...), from jinja2/tests.py.
#include <algorithm>

#include "builtins.h"
#include "interpreter.h"
#include "py_format.h"
#include "py_string.h"

namespace macserve::chat {
namespace {

const Value& only_arg(const char* name, const Arguments& args) {
  if (args.positional.size() != 1 || !args.keyword.empty()) {
    raise(ErrorKind::kTypeError, "test '{}' takes exactly one argument", name);
  }
  return args.positional[0];
}

void no_args(const char* name, const Arguments& args) {
  if (!args.positional.empty() || !args.keyword.empty()) {
    raise(ErrorKind::kTypeError, "test '{}' takes no arguments", name);
  }
}

bool test_defined(Interpreter&, const Value& v, Arguments& a) {
  no_args("defined", a);
  return !v.is_undefined();
}
bool test_undefined(Interpreter&, const Value& v, Arguments& a) {
  no_args("undefined", a);
  return v.is_undefined();
}
bool test_none(Interpreter&, const Value& v, Arguments& a) {
  no_args("none", a);
  return v.is_none();
}
bool test_boolean(Interpreter&, const Value& v, Arguments& a) {
  no_args("boolean", a);
  return v.is_bool();
}
bool test_true(Interpreter&, const Value& v, Arguments& a) {
  no_args("true", a);
  return v.is_bool() && v.as_bool();
}
bool test_false(Interpreter&, const Value& v, Arguments& a) {
  no_args("false", a);
  return v.is_bool() && !v.as_bool();
}
bool test_integer(Interpreter&, const Value& v, Arguments& a) {
  no_args("integer", a);
  return v.is_int();
}
bool test_float(Interpreter&, const Value& v, Arguments& a) {
  no_args("float", a);
  return v.is_float();
}
bool test_number(Interpreter&, const Value& v, Arguments& a) {
  no_args("number", a);
  return v.is_number();
}
bool test_string(Interpreter&, const Value& v, Arguments& a) {
  no_args("string", a);
  return v.is_string();
}
bool test_mapping(Interpreter&, const Value& v, Arguments& a) {
  no_args("mapping", a);
  return v.is_dict();
}
// Undefined is iterable (empty) and even a sequence (it has __len__ and __getitem__) in Python.
bool test_iterable(Interpreter&, const Value& v, Arguments& a) {
  no_args("iterable", a);
  if (v.is_object()) return v.as_object().type_name() == "LoopContext";
  return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
}
bool test_sequence(Interpreter&, const Value& v, Arguments& a) {
  no_args("sequence", a);
  return v.is_sequence() || v.is_dict() || v.is_undefined();
}
bool test_callable(Interpreter&, const Value& v, Arguments& a) {
  no_args("callable", a);
  return v.is_undefined() || (v.is_object() && v.as_object().is_callable());
}
bool test_escaped(Interpreter&, const Value&, Arguments& a) {
  no_args("escaped", a);
  return false;  // no Markup values: autoescape is off in transformers' environment
}

// Python's `is`: singletons and small ints are identical, containers and strings by object.
bool test_sameas(Interpreter&, const Value& v, Arguments& a) {
  const Value& other = only_arg("sameas", a);
  if (v.kind() != other.kind()) return false;
  switch (v.kind()) {
    case ValueKind::kUndefined:
      return false;
    case ValueKind::kNone:
      return true;
    case ValueKind::kBool:
      return v.as_bool() == other.as_bool();
    case ValueKind::kInt:
      return v.as_int() == other.as_int() && v.as_int() >= -5 && v.as_int() <= 256;
    case ValueKind::kFloat:
      return false;
    case ValueKind::kString:
      return &v.as_string() == &other.as_string();
    case ValueKind::kList:
      return &v.as_list() == &other.as_list();
    case ValueKind::kDict:
      return &v.as_dict() == &other.as_dict();
    case ValueKind::kObject:
      return v.object_ptr() == other.object_ptr();
  }
  return false;
}

bool modulo_is(Interpreter& interp, const Value& v, const Value& divisor, int64_t want) {
  return values_equal(binary_op(interp, BinaryOp::kMod, v, divisor), Value::integer(want));
}
bool test_odd(Interpreter& interp, const Value& v, Arguments& a) {
  no_args("odd", a);
  return modulo_is(interp, v, Value::integer(2), 1);
}
bool test_even(Interpreter& interp, const Value& v, Arguments& a) {
  no_args("even", a);
  return modulo_is(interp, v, Value::integer(2), 0);
}
bool test_divisibleby(Interpreter& interp, const Value& v, Arguments& a) {
  return modulo_is(interp, v, only_arg("divisibleby", a), 0);
}

bool test_lower(Interpreter&, const Value& v, Arguments& a) {
  no_args("lower", a);
  return py_islower(py_str(v));
}
bool test_upper(Interpreter&, const Value& v, Arguments& a) {
  no_args("upper", a);
  return py_isupper(py_str(v));
}
bool test_in(Interpreter&, const Value& v, Arguments& a) {
  return value_contains(only_arg("in", a), v);
}
bool test_eq(Interpreter&, const Value& v, Arguments& a) {
  return values_equal(v, only_arg("eq", a));
}
bool test_ne(Interpreter&, const Value& v, Arguments& a) {
  return !values_equal(v, only_arg("ne", a));
}
bool test_lt(Interpreter&, const Value& v, Arguments& a) {
  return compare_values(v, only_arg("lt", a), CompareOp::kLt);
}
bool test_le(Interpreter&, const Value& v, Arguments& a) {
  return compare_values(v, only_arg("le", a), CompareOp::kLe);
}
bool test_gt(Interpreter&, const Value& v, Arguments& a) {
  return compare_values(v, only_arg("gt", a), CompareOp::kGt);
}
bool test_ge(Interpreter&, const Value& v, Arguments& a) {
  return compare_values(v, only_arg("ge", a), CompareOp::kGe);
}
bool test_filter(Interpreter&, const Value& v, Arguments& a) {
  no_args("filter", a);
  return v.is_string() && find_filter(v.as_string()) != nullptr;
}
bool test_test(Interpreter&, const Value& v, Arguments& a) {
  no_args("test", a);
  return v.is_string() && find_test(v.as_string()) != nullptr;
}

struct TestEntry {
  std::string_view name;
  TestFn fn;
};

constexpr TestEntry kTests[] = {
    {"odd", test_odd},
    {"even", test_even},
    {"divisibleby", test_divisibleby},
    {"defined", test_defined},
    {"undefined", test_undefined},
    {"filter", test_filter},
    {"test", test_test},
    {"none", test_none},
    {"boolean", test_boolean},
    {"false", test_false},
    {"true", test_true},
    {"integer", test_integer},
    {"float", test_float},
    {"lower", test_lower},
    {"upper", test_upper},
    {"string", test_string},
    {"mapping", test_mapping},
    {"number", test_number},
    {"sequence", test_sequence},
    {"iterable", test_iterable},
    {"callable", test_callable},
    {"sameas", test_sameas},
    {"escaped", test_escaped},
    {"in", test_in},
    {"==", test_eq},
    {"eq", test_eq},
    {"equalto", test_eq},
    {"!=", test_ne},
    {"ne", test_ne},
    {">", test_gt},
    {"gt", test_gt},
    {"greaterthan", test_gt},
    {"ge", test_ge},
    {">=", test_ge},
    {"<", test_lt},
    {"lt", test_lt},
    {"lessthan", test_lt},
    {"<=", test_le},
    {"le", test_le},
};

}  // namespace

TestFn find_test(std::string_view name) {
  for (const TestEntry& e : kTests) {
    if (e.name == name) return e.fn;
  }
  return nullptr;
}

}  // namespace macserve::chat
