// The template objects that are not plain data: namespace() (the one mutable value Jinja's
// immutable sandbox allows), the `loop` variable, macros, built-in functions and bound methods.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ast.h"
#include "scope.h"
#include "value.h"

namespace macserve::chat {

// Calls `self.name(args)` for str/list/dict values and objects alike.
Value invoke_method(Interpreter& interp, const Value& self, const std::string& name,
                    Arguments& args);

class NamespaceObject : public Object {
 public:
  std::string_view type_name() const override { return "Namespace"; }
  Value get_attr(const std::string& name) const override;
  void set_attr(const std::string& name, Value value);  // SecurityError for "_" names
  std::string repr() const override;
  void release() override { attrs_.clear(); }

 private:
  std::vector<std::pair<std::string, Value>> attrs_;
};

// One per executed for loop; its position advances as the loop runs, like Jinja's LoopContext.
class LoopObject : public Object {
 public:
  LoopObject(std::vector<Value> items, const Stmt* stmt, ScopePtr scope, int depth)
      : items_(std::move(items)), stmt_(stmt), scope_(std::move(scope)), depth_(depth) {}
  std::string_view type_name() const override { return "LoopContext"; }
  Value get_attr(const std::string& name) const override;
  bool is_callable() const override { return true; }
  Value call(Interpreter& interp, Arguments& args) override;  // loop(children), recursive loops
  Value call_method(Interpreter& interp, const std::string& name, Arguments& args);
  std::string repr() const override;
  void release() override;

  const std::vector<Value>& items() const { return items_; }
  void set_index(size_t i) { index_ = i; }

 private:
  std::vector<Value> items_;
  const Stmt* stmt_;
  ScopePtr scope_;
  int depth_;
  size_t index_ = 0;
  Value last_changed_;
  bool has_changed_value_ = false;
};

class MacroObject : public Object {
 public:
  MacroObject(const MacroDef* def, ScopePtr closure) : def_(def), closure_(std::move(closure)) {}
  std::string_view type_name() const override { return "Macro"; }
  Value get_attr(const std::string& name) const override;
  bool is_callable() const override { return true; }
  Value call(Interpreter& interp, Arguments& args) override;
  std::string repr() const override { return "<Macro '" + def_->name + "'>"; }
  void release() override { closure_.reset(); }

  const MacroDef& def() const { return *def_; }
  const ScopePtr& closure() const { return closure_; }

 private:
  const MacroDef* def_;
  ScopePtr closure_;
};

using BuiltinFn = Value (*)(Interpreter& interp, Arguments& args);

class FunctionObject : public Object {
 public:
  FunctionObject(std::string name, BuiltinFn fn) : name_(std::move(name)), fn_(fn) {}
  std::string_view type_name() const override { return "builtin_function_or_method"; }
  bool is_callable() const override { return true; }
  Value call(Interpreter& interp, Arguments& args) override { return fn_(interp, args); }
  std::string repr() const override { return "<built-in function " + name_ + ">"; }

 private:
  std::string name_;
  BuiltinFn fn_;
};

// `obj.method` taken without calling it.
class BoundMethodObject : public Object {
 public:
  BoundMethodObject(Value self, std::string name)
      : self_(std::move(self)), name_(std::move(name)) {}
  std::string_view type_name() const override { return "builtin_function_or_method"; }
  bool is_callable() const override { return true; }
  Value call(Interpreter& interp, Arguments& args) override {
    return invoke_method(interp, self_, name_, args);
  }
  std::string repr() const override;
  void release() override { self_ = Value(); }

 private:
  Value self_;
  std::string name_;
};

}  // namespace macserve::chat
