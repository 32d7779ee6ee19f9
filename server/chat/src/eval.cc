// Expression evaluation.
#include "builtins.h"
#include "interpreter.h"
#include "py_format.h"

namespace macserve::chat {
namespace {

// Work a result stands for beyond one step: building a long string or list is not free.
uint64_t weight(const Value& v) {
  if (v.is_string()) return v.as_string().size() / 64;
  if (v.is_list()) return v.as_list().items.size() / 8;
  if (v.is_dict()) return v.as_dict().size() / 8;
  return 0;
}

}  // namespace

Value Interpreter::eval(const Expr& e, const ScopePtr& scope) {
  try {
    DepthCounter depth(*this);
    charge(1);
    Value v = eval_node(e, scope);
    charge(weight(v));
    return v;
  } catch (const TemplateError& err) {
    fail_at(err, e.pos);
  }
}

Value Interpreter::eval_node(const Expr& e, const ScopePtr& scope) {
  switch (e.kind) {
    case ExprKind::kLiteral:
      return e.literal;
    case ExprKind::kName:
      return eval_name(e, scope);
    case ExprKind::kList:
      return Value::list(eval_items(e.children, scope));
    case ExprKind::kTuple:
      return Value::list(eval_items(e.children, scope), true);
    case ExprKind::kDict:
      return eval_dict(e, scope);
    case ExprKind::kGetAttr:
      return eval_getattr(e, scope);
    case ExprKind::kGetItem:
      return eval_getitem(e, scope);
    case ExprKind::kSlice:
      raise(ErrorKind::kTypeError, "a slice is only valid inside []");
    case ExprKind::kCall:
      return eval_call(e, scope);
    case ExprKind::kFilter:
      return eval_filter(e, scope, nullptr);
    case ExprKind::kTest:
      return eval_test(e, scope);
    case ExprKind::kNot:
      return Value::boolean(!eval(*e.children[0], scope).truthy());
    case ExprKind::kNeg:
      return unary_minus(eval(*e.children[0], scope));
    case ExprKind::kPos:
      return unary_plus(eval(*e.children[0], scope));
    case ExprKind::kBinary: {
      const Value a = eval(*e.children[0], scope);
      const Value b = eval(*e.children[1], scope);
      return binary_op(*this, e.op, a, b);
    }
    case ExprKind::kAnd: {
      Value a = eval(*e.children[0], scope);
      return a.truthy() ? eval(*e.children[1], scope) : a;
    }
    case ExprKind::kOr: {
      Value a = eval(*e.children[0], scope);
      return a.truthy() ? a : eval(*e.children[1], scope);
    }
    case ExprKind::kConcat:
      return eval_concat(e, scope);
    case ExprKind::kCompare:
      return eval_compare(e, scope);
    case ExprKind::kCondExpr:
      return eval_cond(e, scope);
    case ExprKind::kNsRef:
      raise(ErrorKind::kRuntimeError, "a namespace reference is only valid in {{% set %}}");
  }
  return Value();
}

Value Interpreter::eval_name(const Expr& e, const ScopePtr& scope) {
  if (const Value* v = scope->find(e.name)) return *v;
  Value global = find_global(e.name);
  if (!global.is_undefined()) return global;
  return Value::undefined(fmt::format("'{}' is undefined", e.name));
}

std::vector<Value> Interpreter::eval_items(const std::vector<ExprPtr>& items,
                                           const ScopePtr& scope) {
  std::vector<Value> out;
  out.reserve(items.size());
  for (const ExprPtr& item : items) out.push_back(eval(*item, scope));
  return out;
}

Value Interpreter::eval_dict(const Expr& e, const ScopePtr& scope) {
  auto dict = std::make_shared<DictData>();
  for (size_t i = 0; i + 1 < e.children.size(); i += 2) {
    Value key = eval(*e.children[i], scope);
    dict->set(std::move(key), eval(*e.children[i + 1], scope));
  }
  return Value::dict(std::move(dict));
}

Value Interpreter::eval_getattr(const Expr& e, const ScopePtr& scope) {
  return get_attribute(eval(*e.children[0], scope), e.name);
}

Value Interpreter::eval_getitem(const Expr& e, const ScopePtr& scope) {
  const Value obj = eval(*e.children[0], scope);
  const Expr& index = *e.children[1];
  if (index.kind != ExprKind::kSlice) return get_item(*this, obj, eval(index, scope));
  Value bounds[3];
  for (size_t i = 0; i < 3; ++i) {
    bounds[i] = index.children[i] ? eval(*index.children[i], scope) : Value::none();
  }
  if (obj.is_undefined()) raise_undefined(obj);
  return slice_value(*this, obj, bounds[0], bounds[1], bounds[2]);
}

Arguments Interpreter::eval_args(const Expr& e, const ScopePtr& scope) {
  Arguments args;
  args.positional = eval_items(e.args, scope);
  for (const auto& [name, expr] : e.kwargs) args.keyword.emplace_back(name, eval(*expr, scope));
  if (e.star_args) {
    for (Value& v : iterate(eval(*e.star_args, scope))) args.positional.push_back(std::move(v));
  }
  if (e.star_kwargs) {
    const Value kw = eval(*e.star_kwargs, scope);
    if (!kw.is_dict()) raise(ErrorKind::kTypeError, "argument after ** must be a mapping");
    for (const auto& [k, v] : kw.as_dict().items()) {
      if (!k.is_string()) raise(ErrorKind::kTypeError, "keywords must be strings");
      args.keyword.emplace_back(k.as_string(), v);
    }
  }
  return args;
}

Value Interpreter::eval_call(const Expr& e, const ScopePtr& scope, const Value* caller) {
  const Expr& callee = *e.children[0];
  // obj.method(...) calls the method directly instead of building a bound method first.
  if (callee.kind == ExprKind::kGetAttr && caller == nullptr) {
    Value self = eval(*callee.children[0], scope);
    if ((self.is_string() || self.is_list() || self.is_dict()) &&
        is_method_name(self, callee.name)) {
      Arguments args = eval_args(e, scope);
      return call_method(*this, self, callee.name, args);
    }
    Value fn = get_attribute(self, callee.name);
    Arguments args = eval_args(e, scope);
    return call_value(fn, args);
  }
  const Value fn = eval(callee, scope);
  Arguments args = eval_args(e, scope);
  if (caller != nullptr) args.keyword.emplace_back("caller", *caller);
  return call_value(fn, args);
}

Value Interpreter::call_value(const Value& callee, Arguments& args) {
  if (callee.is_undefined()) raise_undefined(callee);
  if (callee.is_object() && callee.as_object().is_callable()) {
    DepthCounter depth(*this);
    return callee.as_object().call(*this, args);
  }
  raise(ErrorKind::kTypeError, "'{}' object is not callable", type_name(callee));
}

Value Interpreter::eval_filter(const Expr& e, const ScopePtr& scope, const Value* input) {
  const Value operand = input != nullptr ? *input : eval(*e.children[0], scope);
  Arguments args = eval_args(e, scope);
  return e.filter(*this, operand, args);
}

Value Interpreter::eval_test(const Expr& e, const ScopePtr& scope) {
  const Value operand = eval(*e.children[0], scope);
  Arguments args = eval_args(e, scope);
  return Value::boolean(e.test(*this, operand, args));
}

Value Interpreter::eval_compare(const Expr& e, const ScopePtr& scope) {
  Value left = eval(*e.children[0], scope);
  for (size_t i = 0; i < e.compare_ops.size(); ++i) {
    Value right = eval(*e.children[i + 1], scope);
    bool ok = false;
    switch (e.compare_ops[i]) {
      case CompareKind::kEq:
        ok = values_equal(left, right);
        break;
      case CompareKind::kNe:
        ok = !values_equal(left, right);
        break;
      case CompareKind::kLt:
        ok = compare_values(left, right, CompareOp::kLt);
        break;
      case CompareKind::kLe:
        ok = compare_values(left, right, CompareOp::kLe);
        break;
      case CompareKind::kGt:
        ok = compare_values(left, right, CompareOp::kGt);
        break;
      case CompareKind::kGe:
        ok = compare_values(left, right, CompareOp::kGe);
        break;
      case CompareKind::kIn:
        ok = value_contains(right, left);
        break;
      case CompareKind::kNotIn:
        ok = !value_contains(right, left);
        break;
    }
    if (!ok) return Value::boolean(false);
    left = std::move(right);
  }
  return Value::boolean(true);
}

Value Interpreter::eval_concat(const Expr& e, const ScopePtr& scope) {
  std::string out;
  for (const ExprPtr& part : e.children) {
    out += py_str(eval(*part, scope), budget_.max_bytes);
    check_size(out.size());
  }
  return Value::string(std::move(out));
}

Value Interpreter::eval_cond(const Expr& e, const ScopePtr& scope) {
  if (eval(*e.children[0], scope).truthy()) return eval(*e.children[1], scope);
  if (e.children[2]) return eval(*e.children[2], scope);
  return Value::undefined(fmt::format(
      "the inline if-expression on line {} evaluated to false and no else section was defined.",
      e.pos.line));
}

}  // namespace macserve::chat
