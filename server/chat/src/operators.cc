// Python operator semantics: arithmetic on bool/int/float (floor division and modulo round
// toward negative infinity), str/list concatenation and repetition, attribute and item access
// with Jinja's fallbacks (obj.x tries obj['x'], missing keys give undefined), and slicing.
// Python ints are unbounded; here they are 64-bit and overflow is an error, not a wrong number.
#include <algorithm>
#include <cmath>

#include "bounds.h"
#include "builtins.h"
#include "interpreter.h"
#include "py_format.h"
#include "string_format.h"
#include "unicode.h"

namespace macserve::chat {
namespace {

const char* op_symbol(BinaryOp op) {
  switch (op) {
    case BinaryOp::kAdd:
      return "+";
    case BinaryOp::kSub:
      return "-";
    case BinaryOp::kMul:
      return "*";
    case BinaryOp::kDiv:
      return "/";
    case BinaryOp::kFloorDiv:
      return "//";
    case BinaryOp::kMod:
      return "%";
    case BinaryOp::kPow:
      return "** or pow()";
  }
  return "?";
}

[[noreturn]] void unsupported(BinaryOp op, const Value& a, const Value& b) {
  raise(ErrorKind::kTypeError, "unsupported operand type(s) for {}: '{}' and '{}'", op_symbol(op),
        type_name(a), type_name(b));
}

[[noreturn]] void int_overflow() {
  raise(ErrorKind::kOverflowError, "integer result does not fit in 64 bits");
}

int64_t int_pow(int64_t base, int64_t exp) {
  int64_t result = 1;
  while (exp > 0) {
    if ((exp & 1) != 0 && __builtin_mul_overflow(result, base, &result)) int_overflow();
    exp >>= 1;
    if (exp > 0 && __builtin_mul_overflow(base, base, &base)) int_overflow();
  }
  return result;
}

Value int_arith(BinaryOp op, int64_t a, int64_t b) {
  int64_t r = 0;
  switch (op) {
    case BinaryOp::kAdd:
      if (__builtin_add_overflow(a, b, &r)) int_overflow();
      return Value::integer(r);
    case BinaryOp::kSub:
      if (__builtin_sub_overflow(a, b, &r)) int_overflow();
      return Value::integer(r);
    case BinaryOp::kMul:
      if (__builtin_mul_overflow(a, b, &r)) int_overflow();
      return Value::integer(r);
    case BinaryOp::kDiv:
      if (b == 0) raise(ErrorKind::kZeroDivisionError, "division by zero");
      return Value::real(static_cast<double>(a) / static_cast<double>(b));
    case BinaryOp::kFloorDiv:
      if (b == 0) raise(ErrorKind::kZeroDivisionError, "integer division or modulo by zero");
      if (b == -1) return int_arith(BinaryOp::kSub, 0, a);
      r = a / b;
      if (a % b != 0 && ((a < 0) != (b < 0))) --r;
      return Value::integer(r);
    case BinaryOp::kMod:
      if (b == 0) raise(ErrorKind::kZeroDivisionError, "integer modulo by zero");
      if (b == -1) return Value::integer(0);
      r = a % b;
      if (r != 0 && ((r < 0) != (b < 0))) r += b;
      return Value::integer(r);
    case BinaryOp::kPow:
      if (b >= 0) return Value::integer(int_pow(a, b));
      if (a == 0) raise(ErrorKind::kZeroDivisionError, "0.0 cannot be raised to a negative power");
      return Value::real(std::pow(static_cast<double>(a), static_cast<double>(b)));
  }
  return Value();
}

// CPython's float_divmod, so -7.5 // 2 and -7.5 % 2 match Python.
void float_divmod(double x, double y, double& div, double& mod) {
  mod = std::fmod(x, y);
  div = (x - mod) / y;
  if (mod != 0.0) {
    if ((y < 0) != (mod < 0)) {
      mod += y;
      div -= 1.0;
    }
  } else {
    mod = std::copysign(0.0, y);
  }
  if (div != 0.0) {
    const double floor_div = std::floor(div);
    div = div - floor_div > 0.5 ? floor_div + 1.0 : floor_div;
  } else {
    div = std::copysign(0.0, x / y);
  }
}

Value float_arith(BinaryOp op, double a, double b) {
  double div = 0;
  double mod = 0;
  switch (op) {
    case BinaryOp::kAdd:
      return Value::real(a + b);
    case BinaryOp::kSub:
      return Value::real(a - b);
    case BinaryOp::kMul:
      return Value::real(a * b);
    case BinaryOp::kDiv:
      if (b == 0) raise(ErrorKind::kZeroDivisionError, "float division by zero");
      return Value::real(a / b);
    case BinaryOp::kFloorDiv:
      if (b == 0) raise(ErrorKind::kZeroDivisionError, "float floor division by zero");
      float_divmod(a, b, div, mod);
      return Value::real(div);
    case BinaryOp::kMod:
      if (b == 0) raise(ErrorKind::kZeroDivisionError, "float modulo");
      float_divmod(a, b, div, mod);
      return Value::real(mod);
    case BinaryOp::kPow: {
      if (a == 0 && b < 0) {
        raise(ErrorKind::kZeroDivisionError, "0.0 cannot be raised to a negative power");
      }
      if (a < 0 && std::isfinite(b) && b != std::floor(b)) {
        raise(ErrorKind::kValueError, "a negative number to a fractional power is complex");
      }
      const double r = std::pow(a, b);
      if (std::isinf(r) && std::isfinite(a) && std::isfinite(b)) {
        raise(ErrorKind::kOverflowError, "(34, 'Numerical result out of range')");
      }
      return Value::real(r);
    }
  }
  return Value();
}

Value repeat(Interpreter& interp, const Value& seq, int64_t n) {
  if (seq.is_string()) {
    const std::string& s = seq.as_string();
    if (n <= 0 || s.empty()) return Value::string(std::string());
    interp.check_size(s.size() * static_cast<size_t>(std::min<int64_t>(n, INT32_MAX)));
    std::string out;
    out.reserve(s.size() * static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) out += s;
    return Value::string(std::move(out));
  }
  const ListData& list = seq.as_list();
  if (n <= 0 || list.items.empty()) return Value::list({}, list.is_tuple);
  if (static_cast<uint64_t>(n) > kMaxListItems / list.items.size()) {
    raise(ErrorKind::kLimit, "a list of more than {} items", kMaxListItems);
  }
  interp.charge(list.items.size() * static_cast<size_t>(n) / 8);
  std::vector<Value> out;
  out.reserve(list.items.size() * static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out.insert(out.end(), list.items.begin(), list.items.end());
  return Value::list(std::move(out), list.is_tuple);
}

Value add(Interpreter& interp, const Value& a, const Value& b) {
  if (a.is_string() && b.is_string()) {
    interp.check_size(a.as_string().size() + b.as_string().size());
    return Value::string(a.as_string() + b.as_string());
  }
  if (a.is_sequence() && b.is_sequence() && a.is_list() && b.is_list() &&
      a.as_list().is_tuple == b.as_list().is_tuple) {
    if (a.as_list().items.size() + b.as_list().items.size() > kMaxListItems) {
      raise(ErrorKind::kLimit, "a list of more than {} items", kMaxListItems);
    }
    std::vector<Value> items = a.as_list().items;
    items.insert(items.end(), b.as_list().items.begin(), b.as_list().items.end());
    return Value::list(std::move(items), a.as_list().is_tuple);
  }
  if (a.is_sequence()) {
    raise(ErrorKind::kTypeError, "can only concatenate {} (not \"{}\") to {}", type_name(a),
          type_name(b), type_name(a));
  }
  unsupported(BinaryOp::kAdd, a, b);
}

}  // namespace

void raise_undefined(const Value& undefined) {
  const std::string& hint = undefined.undefined_hint();
  raise(hint.starts_with("access to attribute") ? ErrorKind::kSecurityError
                                                : ErrorKind::kUndefinedError,
        "{}", hint);
}

Value binary_op(Interpreter& interp, BinaryOp op, const Value& a, const Value& b) {
  if (a.is_undefined()) raise_undefined(a);
  if (b.is_undefined() && !(op == BinaryOp::kMod && a.is_string())) raise_undefined(b);
  if (a.is_number() && b.is_number()) {
    if (a.is_integral() && b.is_integral()) return int_arith(op, a.as_int(), b.as_int());
    return float_arith(op, a.as_float(), b.as_float());
  }
  if (op == BinaryOp::kAdd) return add(interp, a, b);
  if (op == BinaryOp::kMul) {
    if (a.is_sequence() && b.is_integral()) return repeat(interp, a, b.as_int());
    if (b.is_sequence() && a.is_integral()) return repeat(interp, b, a.as_int());
    if (a.is_sequence() || b.is_sequence()) {
      raise(ErrorKind::kTypeError, "can't multiply sequence by non-int of type '{}'",
            type_name(a.is_sequence() ? b : a));
    }
  }
  if (op == BinaryOp::kMod && a.is_string()) {
    return Value::string(percent_format(interp, a.as_string(), b));
  }
  unsupported(op, a, b);
}

Value unary_minus(const Value& v) {
  if (v.is_undefined()) raise_undefined(v);
  if (v.is_integral()) {
    if (v.as_int() == INT64_MIN) int_overflow();
    return Value::integer(-v.as_int());
  }
  if (v.is_float()) return Value::real(-v.as_float());
  raise(ErrorKind::kTypeError, "bad operand type for unary -: '{}'", type_name(v));
}

Value unary_plus(const Value& v) {
  if (v.is_undefined()) raise_undefined(v);
  if (v.is_integral()) return Value::integer(v.as_int());
  if (v.is_float()) return v;
  raise(ErrorKind::kTypeError, "bad operand type for unary +: '{}'", type_name(v));
}

namespace {

std::string object_type_repr(const Value& obj) {
  if (obj.is_none()) return "None";
  return fmt::format("{} object", type_name(obj));
}

bool is_unsafe_method(const Value& obj, const std::string& name) {
  static const char* const kList[] = {"append", "clear", "pop",    "reverse",
                                      "insert", "sort",  "extend", "remove"};
  static const char* const kDict[] = {"clear", "pop", "popitem", "setdefault", "update"};
  if (obj.is_list()) return std::find(std::begin(kList), std::end(kList), name) != std::end(kList);
  if (obj.is_dict()) return std::find(std::begin(kDict), std::end(kDict), name) != std::end(kDict);
  return false;
}

Value missing_attribute(const Value& obj, const std::string& name) {
  if (is_unsafe_method(obj, name)) {
    return Value::undefined(
        fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, type_name(obj)));
  }
  return Value::undefined(fmt::format("'{}' has no attribute '{}'", object_type_repr(obj), name));
}

}  // namespace

Value get_attribute(const Value& obj, const std::string& name) {
  switch (obj.kind()) {
    case ValueKind::kUndefined:
      raise_undefined(obj);
    case ValueKind::kObject:
      return obj.as_object().get_attr(name);
    case ValueKind::kString:
    case ValueKind::kList:
    case ValueKind::kDict:
      if (is_method_name(obj, name)) return make_bound_method(obj, name);
      if (obj.is_dict()) {
        if (const Value* v = obj.as_dict().find(std::string_view(name))) return *v;
      }
      return missing_attribute(obj, name);
    case ValueKind::kNone:
    case ValueKind::kBool:
    case ValueKind::kInt:
    case ValueKind::kFloat:
      return missing_attribute(obj, name);
  }
  return Value();
}

Value get_item(Interpreter& interp, const Value& obj, const Value& key) {
  if (obj.is_undefined()) raise_undefined(obj);
  if (obj.is_dict()) {
    const Value* v = nullptr;
    try {
      v = obj.as_dict().find(key);
    } catch (const TemplateError&) {
      v = nullptr;  // unhashable key: Jinja's getitem swallows the TypeError
    }
    if (v != nullptr) return *v;
  } else if (obj.is_sequence() && key.is_integral()) {
    if (obj.is_list()) {
      const auto& items = obj.as_list().items;
      int64_t i = key.as_int();
      if (i < 0) i += static_cast<int64_t>(items.size());
      if (i >= 0 && i < static_cast<int64_t>(items.size())) return items[static_cast<size_t>(i)];
    } else {
      const std::string& s = obj.as_string();
      interp.charge(s.size() / 16);  // a code point index walks the string
      int64_t i = key.as_int();
      if (i < 0) i += static_cast<int64_t>(utf8_length(s));
      size_t pos = 0;
      for (int64_t k = 0; k < i && pos < s.size(); ++k) pos += utf8_char_len(s, pos);
      if (i >= 0 && pos < s.size()) return Value::string(s.substr(pos, utf8_char_len(s, pos)));
    }
  }
  if (key.is_string()) {
    if (obj.is_object()) return obj.as_object().get_attr(key.as_string());
    if ((obj.is_string() || obj.is_list() || obj.is_dict()) &&
        is_method_name(obj, key.as_string())) {
      return make_bound_method(obj, key.as_string());
    }
    return missing_attribute(obj, key.as_string());
  }
  return Value::undefined(fmt::format("{} has no element {}", object_type_repr(obj), py_repr(key)));
}

namespace {

// PySlice_AdjustIndices: clamps start/stop for the step's direction.
void adjust_slice(int64_t len, int64_t step, const Value& start_v, const Value& stop_v,
                  int64_t& start, int64_t& stop) {
  const int64_t lower = step < 0 ? -1 : 0;
  const int64_t upper = step < 0 ? len - 1 : len;
  const auto clamp = [&](const Value& v, int64_t fallback) {
    if (v.is_none()) return fallback;
    int64_t i = v.as_int();
    if (i < 0) {
      i += len;
      if (i < lower) i = lower;
    } else if (i > upper) {
      i = upper;
    }
    return i;
  };
  start = clamp(start_v, step < 0 ? upper : lower);
  stop = clamp(stop_v, step < 0 ? lower : upper);
}

template <typename Emit>
void walk_slice(int64_t start, int64_t stop, int64_t step, Emit emit) {
  for (int64_t i = start; step > 0 ? i < stop : i > stop;) {
    emit(static_cast<size_t>(i));
    if (__builtin_add_overflow(i, step, &i)) break;
  }
}

}  // namespace

Value slice_value(Interpreter& interp, const Value& obj, const Value& start, const Value& stop,
                  const Value& step) {
  // Jinja compiles x[a:b] to a plain Python subscript, so errors are not turned into undefined.
  if (obj.is_dict()) raise(ErrorKind::kTypeError, "unhashable type: 'slice'");
  if (!obj.is_sequence()) {
    raise(ErrorKind::kTypeError, "'{}' object is not subscriptable", type_name(obj));
  }
  const auto is_index = [](const Value& v) { return v.is_none() || v.is_integral(); };
  if (!is_index(start) || !is_index(stop) || !is_index(step)) {
    raise(ErrorKind::kTypeError,
          "slice indices must be integers or None or have an __index__ method");
  }
  const int64_t step_n = step.is_none() ? 1 : step.as_int();
  if (step_n == 0) raise(ErrorKind::kValueError, "slice step cannot be zero");
  int64_t from = 0;
  int64_t to = 0;
  if (obj.is_list()) {
    const ListData& list = obj.as_list();
    adjust_slice(static_cast<int64_t>(list.items.size()), step_n, start, stop, from, to);
    std::vector<Value> out;
    walk_slice(from, to, step_n, [&](size_t i) { out.push_back(list.items[i]); });
    interp.charge(out.size() / 8);
    return Value::list(std::move(out), list.is_tuple);
  }
  const std::string& s = obj.as_string();
  std::vector<size_t> offsets;  // code point starts, plus the end
  for (size_t i = 0; i < s.size(); i += utf8_char_len(s, i)) offsets.push_back(i);
  offsets.push_back(s.size());
  interp.charge(s.size() / 64);
  adjust_slice(static_cast<int64_t>(offsets.size()) - 1, step_n, start, stop, from, to);
  std::string out;
  walk_slice(from, to, step_n,
             [&](size_t i) { out.append(s, offsets[i], offsets[i + 1] - offsets[i]); });
  return Value::string(std::move(out));
}

}  // namespace macserve::chat
