// Statement execution: output, control flow, loops, assignment, macros and captured blocks.
#include "interpreter.h"

#include "bounds.h"
#include "py_format.h"

namespace macserve::chat {

DepthCounter::DepthCounter(Interpreter& interp) : interp_(interp) {
  if (++interp_.depth_ > kMaxEvalDepth) {
    --interp_.depth_;
    raise(ErrorKind::kLimit, "template recursion deeper than {} levels", kMaxEvalDepth);
  }
}

Interpreter::~Interpreter() {
  for (const auto& weak : tracked_) {
    if (auto object = weak.lock()) object->release();
  }
}

std::string Interpreter::render(const Program& program, const ScopePtr& root) {
  std::string out;
  exec_list(program.body, root, out);
  return out;
}

void Interpreter::charge(uint64_t steps) {
  steps_ += steps;
  if (steps_ > budget_.max_steps) {
    raise(ErrorKind::kLimit, "template rendering exceeds the limit of {} steps", budget_.max_steps);
  }
}

void Interpreter::check_size(size_t bytes) const {
  if (bytes > budget_.max_bytes) {
    raise(ErrorKind::kLimit, "template text grows past the limit of {} bytes", budget_.max_bytes);
  }
}

std::tm Interpreter::now() const {
  if (fixed_now_) return *fixed_now_;
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  return tm;
}

void Interpreter::track(const std::shared_ptr<Object>& object) {
  // Compacting when the list doubles keeps it proportional to the objects still alive.
  if (tracked_.size() >= tracked_compacted_) {
    std::erase_if(tracked_, [](const auto& w) { return w.expired(); });
    tracked_compacted_ = std::max<size_t>(64, tracked_.size() * 2);
  }
  tracked_.push_back(object);
}

void Interpreter::fail_at(const TemplateError& err, SourcePos pos) const {
  switch (err.kind()) {
    case ErrorKind::kRaised:
      throw Error(ErrorCode::kInvalidArgument, err.what());
    case ErrorKind::kLimit:
      throw Error(ErrorCode::kResourceExhausted,
                  fmt::format("chat template stopped at line {}, column {}: {}", pos.line,
                              pos.column, err.what()));
    case ErrorKind::kTypeError:
    case ErrorKind::kValueError:
    case ErrorKind::kUndefinedError:
    case ErrorKind::kZeroDivisionError:
    case ErrorKind::kOverflowError:
    case ErrorKind::kSecurityError:
    case ErrorKind::kRuntimeError:
      break;
  }
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("chat template error at line {}, column {}: {}: {}", pos.line, pos.column,
                          to_string(err.kind()), err.what()));
}

void Interpreter::write(std::string& out, std::string_view text) {
  if (out.size() + text.size() > budget_.max_bytes) {
    raise(ErrorKind::kLimit, "rendered text exceeds the limit of {} bytes", budget_.max_bytes);
  }
  charge(text.size() / 64);
  out.append(text);
}

Interpreter::Flow Interpreter::exec_list(const StmtList& list, const ScopePtr& scope,
                                         std::string& out) {
  for (const StmtPtr& stmt : list) {
    const Flow flow = exec(*stmt, scope, out);
    if (flow != Flow::kNormal) return flow;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec(const Stmt& stmt, const ScopePtr& scope, std::string& out) {
  try {
    DepthCounter depth(*this);
    charge(1);
    return exec_node(stmt, scope, out);
  } catch (const TemplateError& err) {
    fail_at(err, stmt.pos);
  }
}

Interpreter::Flow Interpreter::exec_node(const Stmt& stmt, const ScopePtr& scope,
                                         std::string& out) {
  switch (stmt.kind) {
    case StmtKind::kText:
      write(out, stmt.text);
      return Flow::kNormal;
    case StmtKind::kPrint:
      write(out, py_str(eval(*stmt.expr, scope), budget_.max_bytes - out.size()));
      return Flow::kNormal;
    case StmtKind::kIf:
      return exec_if(stmt, scope, out);
    case StmtKind::kFor:
      exec_for(stmt, scope, out);
      return Flow::kNormal;
    case StmtKind::kSet:
      assign(*stmt.target, eval(*stmt.expr, scope), *scope);
      return Flow::kNormal;
    case StmtKind::kSetBlock:
      exec_set_block(stmt, scope);
      return Flow::kNormal;
    case StmtKind::kMacro: {
      auto macro = std::make_shared<MacroObject>(stmt.macro.get(), scope);
      track(macro);
      scope->set(stmt.macro->name, Value::object(std::move(macro)));
      return Flow::kNormal;
    }
    case StmtKind::kCallBlock:
      exec_call_block(stmt, scope, out);
      return Flow::kNormal;
    case StmtKind::kFilterBlock:
      write(out, py_str(apply_filter_chain(stmt.expr.get(),
                                           Value::string(capture(stmt.body, scope)), scope)));
      return Flow::kNormal;
    case StmtKind::kWith:
      exec_with(stmt, scope, out);
      return Flow::kNormal;
    case StmtKind::kScope:
      write(out, capture(stmt.body, scope));
      return Flow::kNormal;
    case StmtKind::kBreak:
      return Flow::kBreak;
    case StmtKind::kContinue:
      return Flow::kContinue;
  }
  return Flow::kNormal;
}

Interpreter::Flow Interpreter::exec_if(const Stmt& stmt, const ScopePtr& scope, std::string& out) {
  if (eval(*stmt.expr, scope).truthy()) return exec_list(stmt.body, scope, out);
  for (const auto& [test, body] : stmt.elifs) {
    if (eval(*test, scope).truthy()) return exec_list(body, scope, out);
  }
  return exec_list(stmt.else_body, scope, out);
}

void Interpreter::exec_for(const Stmt& stmt, const ScopePtr& scope, std::string& out) {
  run_loop(stmt, scope, iterate(eval(*stmt.expr, scope)), 0, out);
}

void Interpreter::run_loop(const Stmt& stmt, const ScopePtr& scope, std::vector<Value> items,
                           int depth, std::string& out) {
  charge(items.size() / 8);
  if (stmt.condition) {
    // Jinja filters before it counts, so loop.length and loop.last see only kept items.
    std::vector<Value> kept;
    for (Value& item : items) {
      auto filter_scope = std::make_shared<Scope>(scope);
      assign(*stmt.target, item, *filter_scope);
      if (eval(*stmt.condition, filter_scope).truthy()) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  auto loop = std::make_shared<LoopObject>(std::move(items), &stmt, scope, depth);
  track(loop);
  const Value loop_value = Value::object(loop);
  // Jinja runs `else` unless some iteration reached the end of the body: an iteration left by
  // break or continue does not count.
  bool completed_any = false;
  for (size_t i = 0; i < loop->items().size(); ++i) {
    charge(1);
    auto iteration = std::make_shared<Scope>(scope);
    assign(*stmt.target, loop->items()[i], *iteration);
    loop->set_index(i);
    iteration->set("loop", loop_value);
    const Flow flow = exec_list(stmt.body, iteration, out);
    if (flow == Flow::kBreak) break;
    if (flow == Flow::kContinue) continue;
    completed_any = true;
  }
  if (!completed_any && !stmt.else_body.empty()) {
    exec_list(stmt.else_body, std::make_shared<Scope>(scope), out);
  }
}

Value Interpreter::call_loop(const Stmt& stmt, const ScopePtr& scope, const Value& iterable,
                             int depth) {
  std::string out;
  run_loop(stmt, scope, iterate(iterable), depth, out);
  return Value::string(std::move(out));
}

std::string Interpreter::capture(const StmtList& body, const ScopePtr& parent) {
  std::string out;
  exec_list(body, std::make_shared<Scope>(parent), out);
  return out;
}

Value Interpreter::apply_filter_chain(const Expr* chain, Value input, const ScopePtr& scope) {
  if (chain == nullptr) return input;
  // The chain is nested innermost-first: f2(f1(<input>)); apply the inner filters first.
  if (chain->children.empty() || !chain->children[0]) return eval_filter(*chain, scope, &input);
  Value inner = apply_filter_chain(chain->children[0].get(), std::move(input), scope);
  return eval_filter(*chain, scope, &inner);
}

void Interpreter::exec_set_block(const Stmt& stmt, const ScopePtr& scope) {
  Value text = Value::string(capture(stmt.body, scope));
  assign(*stmt.target, apply_filter_chain(stmt.expr.get(), std::move(text), scope), *scope);
}

void Interpreter::exec_call_block(const Stmt& stmt, const ScopePtr& scope, std::string& out) {
  auto caller = std::make_shared<MacroObject>(stmt.macro.get(), scope);
  track(caller);
  const Value caller_value = Value::object(std::move(caller));
  write(out, py_str(eval_call(*stmt.expr, scope, &caller_value), budget_.max_bytes - out.size()));
}

void Interpreter::exec_with(const Stmt& stmt, const ScopePtr& scope, std::string& out) {
  auto inner = std::make_shared<Scope>(scope);
  for (size_t i = 0; i < stmt.with_targets.size(); ++i) {
    assign(*stmt.with_targets[i], eval(*stmt.with_values[i], scope), *inner);
  }
  exec_list(stmt.body, inner, out);
}

void Interpreter::assign(const Expr& target, const Value& value, Scope& scope) {
  if (target.kind == ExprKind::kName) {
    scope.set(target.name, value);
  } else if (target.kind == ExprKind::kTuple) {
    const std::vector<Value> items = iterate(value);
    const size_t want = target.children.size();
    if (items.size() < want) {
      raise(ErrorKind::kValueError, "not enough values to unpack (expected {}, got {})", want,
            items.size());
    }
    if (items.size() > want) {
      raise(ErrorKind::kValueError, "too many values to unpack (expected {})", want);
    }
    for (size_t i = 0; i < want; ++i) assign(*target.children[i], items[i], scope);
  } else if (target.kind == ExprKind::kNsRef) {
    const Value* ns = scope.find(target.name);
    auto* object = ns != nullptr && ns->is_object()
                       ? dynamic_cast<NamespaceObject*>(&ns->as_object())
                       : nullptr;
    if (object == nullptr) {
      raise(ErrorKind::kRuntimeError, "cannot assign attribute on non-namespace object");
    }
    object->set_attr(target.attr, value);
  } else {
    raise(ErrorKind::kRuntimeError, "cannot assign to this expression");
  }
}

namespace {

using Kwargs = std::vector<std::pair<std::string, Value>>;

bool take_kwarg(Kwargs& kwargs, const std::string& name, Value& out) {
  for (auto it = kwargs.begin(); it != kwargs.end(); ++it) {
    if (it->first == name) {
      out = std::move(it->second);
      kwargs.erase(it);
      return true;
    }
  }
  return false;
}

}  // namespace

// Binds arguments as Jinja's Macro.__call__ does: positional, then keywords, then defaults
// (evaluated in the macro's scope, so they may use earlier parameters); caller, kwargs and
// varargs exist only when the body mentions them.
Value Interpreter::call_macro(const MacroObject& macro, Arguments& args) {
  const MacroDef& def = macro.def();
  auto scope = std::make_shared<Scope>(macro.closure());
  const size_t n = def.params.size();
  Kwargs kwargs = std::move(args.keyword);
  bool found_caller = false;
  for (size_t i = 0; i < n; ++i) {
    const std::string& name = def.params[i];
    Value value;
    bool given = i < args.positional.size();
    if (given) {
      value = args.positional[i];
    } else {
      given = take_kwarg(kwargs, name, value);
      if (name == "caller") found_caller = true;
    }
    if (!given) {
      const size_t first_default = n - def.defaults.size();
      value = i >= first_default
                  ? eval(*def.defaults[i - first_default], scope)
                  : Value::undefined(fmt::format("parameter '{}' was not provided", name));
    }
    scope->set(name, std::move(value));
  }
  if (args.positional.size() >= n) {
    for (const auto& p : def.params) found_caller = found_caller || p == "caller";
  }
  if (def.uses_caller && !found_caller) {
    Value caller;
    if (!take_kwarg(kwargs, "caller", caller)) caller = Value::undefined("No caller defined");
    scope->set("caller", std::move(caller));
  }
  if (def.uses_kwargs) {
    auto dict = std::make_shared<DictData>();
    for (auto& [k, v] : kwargs) dict->set(Value::string(k), std::move(v));
    scope->set("kwargs", Value::dict(std::move(dict)));
  } else if (!kwargs.empty()) {
    raise(ErrorKind::kTypeError, "macro '{}' takes no keyword argument '{}'", def.name,
          kwargs.front().first);
  }
  if (def.uses_varargs) {
    std::vector<Value> rest;
    for (size_t i = n; i < args.positional.size(); ++i) rest.push_back(args.positional[i]);
    scope->set("varargs", Value::list(std::move(rest), true));
  } else if (args.positional.size() > n) {
    raise(ErrorKind::kTypeError, "macro '{}' takes not more than {} argument(s)", def.name, n);
  }
  std::string out;
  exec_list(def.body, scope, out);
  return Value::string(std::move(out));
}

}  // namespace macserve::chat
