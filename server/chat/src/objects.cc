#include "objects.h"

#include "builtins.h"
#include "interpreter.h"
#include "py_format.h"

namespace macserve::chat {

Value invoke_method(Interpreter& interp, const Value& self, const std::string& name,
                    Arguments& args) {
  if (self.is_object()) {
    if (auto* loop = dynamic_cast<LoopObject*>(&self.as_object())) {
      return loop->call_method(interp, name, args);
    }
    raise(ErrorKind::kTypeError, "'{}' object has no method '{}'", type_name(self), name);
  }
  return call_method(interp, self, name, args);
}

// ---- namespace ---------------------------------------------------------------------------

Value NamespaceObject::get_attr(const std::string& name) const {
  for (const auto& [k, v] : attrs_) {
    if (k == name) return v;
  }
  return Value::undefined(fmt::format("'Namespace' object has no attribute '{}'", name));
}

void NamespaceObject::set_attr(const std::string& name, Value value) {
  if (!name.empty() && name[0] == '_') {
    // transformers' TemplateNamespace refuses these to keep templates away from internals.
    raise(ErrorKind::kSecurityError,
          "Chat templates cannot store underscore-prefixed attributes on a namespace, but got "
          "'{}'. Please rename the attribute.",
          name);
  }
  for (auto& kv : attrs_) {
    if (kv.first == name) {
      kv.second = std::move(value);
      return;
    }
  }
  attrs_.emplace_back(name, std::move(value));
}

std::string NamespaceObject::repr() const {
  std::string out = "<Namespace {";
  for (size_t i = 0; i < attrs_.size(); ++i) {
    if (i > 0) out += ", ";
    out += py_repr_string(attrs_[i].first) + ": " + py_repr(attrs_[i].second);
  }
  return out + "}>";
}

// ---- loop --------------------------------------------------------------------------------

Value LoopObject::get_attr(const std::string& name) const {
  const auto n = static_cast<int64_t>(items_.size());
  const auto i = static_cast<int64_t>(index_);
  if (name == "index") return Value::integer(i + 1);
  if (name == "index0") return Value::integer(i);
  if (name == "revindex") return Value::integer(n - i);
  if (name == "revindex0") return Value::integer(n - i - 1);
  if (name == "first") return Value::boolean(i == 0);
  if (name == "last") return Value::boolean(i + 1 == n);
  if (name == "length") return Value::integer(n);
  if (name == "depth") return Value::integer(depth_ + 1);
  if (name == "depth0") return Value::integer(depth_);
  if (name == "previtem") {
    return i > 0 ? items_[index_ - 1] : Value::undefined("there is no previous item");
  }
  if (name == "nextitem") {
    return i + 1 < n ? items_[index_ + 1] : Value::undefined("there is no next item");
  }
  if (name == "cycle" || name == "changed") {
    auto self = std::const_pointer_cast<Object>(shared_from_this());
    return Value::object(std::make_shared<BoundMethodObject>(Value::object(self), name));
  }
  return Object::get_attr(name);
}

Value LoopObject::call_method(Interpreter& /*interp*/, const std::string& name, Arguments& args) {
  if (name == "cycle") {
    if (args.positional.empty()) raise(ErrorKind::kTypeError, "no items for cycling given");
    return args.positional[index_ % args.positional.size()];
  }
  if (name == "changed") {
    Value now = Value::list(args.positional, true);
    if (has_changed_value_ && values_equal(now, last_changed_)) return Value::boolean(false);
    last_changed_ = std::move(now);
    has_changed_value_ = true;
    return Value::boolean(true);
  }
  raise(ErrorKind::kTypeError, "'LoopContext' object has no method '{}'", name);
}

Value LoopObject::call(Interpreter& interp, Arguments& args) {
  if (!stmt_->recursive) {
    raise(ErrorKind::kTypeError,
          "Tried to call non recursive loop. Maybe you forgot the 'recursive' modifier.");
  }
  if (args.positional.size() != 1 || !args.keyword.empty()) {
    raise(ErrorKind::kTypeError, "loop() takes exactly one argument");
  }
  return interp.call_loop(*stmt_, scope_, args.positional[0], depth_ + 1);
}

std::string LoopObject::repr() const {
  return fmt::format("<LoopContext {}/{}>", index_ + 1, items_.size());
}

void LoopObject::release() {
  items_.clear();
  scope_.reset();
  last_changed_ = Value();
}

// ---- macros and methods ------------------------------------------------------------------

Value MacroObject::get_attr(const std::string& name) const {
  if (name == "name") return Value::string(def_->name);
  if (name == "arguments") {
    std::vector<Value> names;
    for (const auto& p : def_->params) names.push_back(Value::string(p));
    return Value::list(std::move(names), true);
  }
  return Object::get_attr(name);
}

Value MacroObject::call(Interpreter& interp, Arguments& args) {
  return interp.call_macro(*this, args);
}

std::string BoundMethodObject::repr() const {
  return fmt::format("<built-in method {} of {} object>", name_, chat::type_name(self_));
}

}  // namespace macserve::chat
