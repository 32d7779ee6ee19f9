// Walks the parsed template and writes the output. One Interpreter serves one render: it owns
// the budgets (output bytes, steps, recursion depth) that make every template terminate, and at
// the end it releases the objects that could hold reference cycles.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ast.h"
#include "macserve/core/error.h"
#include "objects.h"
#include "scope.h"
#include "template_error.h"
#include "value.h"

namespace macserve::chat {

struct Budget {
  size_t max_bytes = 0;    // any one string or output buffer
  uint64_t max_steps = 0;  // evaluation steps, loop iterations and bytes/64 written
};

class Interpreter {
 public:
  Interpreter(const Budget& budget, std::optional<std::tm> fixed_now)
      : budget_(budget), fixed_now_(fixed_now) {}
  ~Interpreter();
  Interpreter(const Interpreter&) = delete;
  Interpreter& operator=(const Interpreter&) = delete;

  std::string render(const Program& program, const ScopePtr& root);

  // ---- services for filters, methods and objects ----------------------------------------
  void charge(uint64_t steps);
  void check_size(size_t bytes) const;  // a string of this size may be created
  size_t max_bytes() const { return budget_.max_bytes; }
  std::tm now() const;
  Value call_value(const Value& callee, Arguments& args);
  Value call_macro(const MacroObject& macro, Arguments& args);
  Value call_loop(const Stmt& stmt, const ScopePtr& scope, const Value& iterable, int depth);
  // Objects that can close a reference cycle; release()d when the render ends.
  void track(const std::shared_ptr<Object>& object);

 private:
  friend class DepthCounter;
  enum class Flow { kNormal, kBreak, kContinue };

  // Statements (interpreter.cc).
  Flow exec_list(const StmtList& list, const ScopePtr& scope, std::string& out);
  Flow exec(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  Flow exec_node(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  Flow exec_if(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  void exec_for(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  void run_loop(const Stmt& stmt, const ScopePtr& scope, std::vector<Value> items, int depth,
                std::string& out);
  void exec_set_block(const Stmt& stmt, const ScopePtr& scope);
  void exec_call_block(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  void exec_with(const Stmt& stmt, const ScopePtr& scope, std::string& out);
  std::string capture(const StmtList& body, const ScopePtr& parent);
  Value apply_filter_chain(const Expr* chain, Value input, const ScopePtr& scope);
  void assign(const Expr& target, const Value& value, Scope& scope);
  void write(std::string& out, std::string_view text);

  // Expressions (eval.cc).
  Value eval(const Expr& e, const ScopePtr& scope);
  Value eval_node(const Expr& e, const ScopePtr& scope);
  Value eval_name(const Expr& e, const ScopePtr& scope);
  Value eval_dict(const Expr& e, const ScopePtr& scope);
  Value eval_getattr(const Expr& e, const ScopePtr& scope);
  Value eval_getitem(const Expr& e, const ScopePtr& scope);
  Value eval_call(const Expr& e, const ScopePtr& scope, const Value* caller = nullptr);
  Value eval_filter(const Expr& e, const ScopePtr& scope, const Value* input);
  Value eval_test(const Expr& e, const ScopePtr& scope);
  Value eval_compare(const Expr& e, const ScopePtr& scope);
  Value eval_concat(const Expr& e, const ScopePtr& scope);
  Value eval_cond(const Expr& e, const ScopePtr& scope);
  Arguments eval_args(const Expr& e, const ScopePtr& scope);
  std::vector<Value> eval_items(const std::vector<ExprPtr>& items, const ScopePtr& scope);

  [[noreturn]] void fail_at(const TemplateError& err, SourcePos pos) const;

  Budget budget_;
  std::optional<std::tm> fixed_now_;
  uint64_t steps_ = 0;
  int depth_ = 0;
  std::vector<std::weak_ptr<Object>> tracked_;
  size_t tracked_compacted_ = 64;
};

// Counts interpreter recursion against kMaxEvalDepth.
class DepthCounter {
 public:
  explicit DepthCounter(Interpreter& interp);
  ~DepthCounter() { --interp_.depth_; }
  DepthCounter(const DepthCounter&) = delete;
  DepthCounter& operator=(const DepthCounter&) = delete;

 private:
  Interpreter& interp_;
};

// Python's semantics for operators on values (operators.cc).
Value binary_op(Interpreter& interp, BinaryOp op, const Value& a, const Value& b);
Value unary_minus(const Value& v);
Value unary_plus(const Value& v);
Value get_attribute(const Value& obj, const std::string& name);
Value get_item(Interpreter& interp, const Value& obj, const Value& key);
Value slice_value(Interpreter& interp, const Value& obj, const Value& start, const Value& stop,
                  const Value& step);
[[noreturn]] void raise_undefined(const Value& undefined);

}  // namespace macserve::chat
