// Recursive-descent parser following Jinja 3.1's parser.py rule for rule (operator precedence,
// tuples, filters and tests after postfix expressions, `a if b` without else, the statement tags
// transformers' environment knows). Nesting and expression height are capped (limits.h) so a
// hostile template fails with an Error instead of exhausting the stack.
#pragma once

#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "ast.h"
#include "lexer.h"

namespace macserve::chat {

// Throws macserve::Error (kInvalidArgument) naming the line and column of a syntax error.
Program parse_template(std::string_view source);

class Parser {
 public:
  explicit Parser(std::vector<Token> tokens) : tokens_(std::move(tokens)) {}
  Program parse();

 private:
  friend class DepthGuard;

  // Token stream.
  const Token& current() const { return tokens_[index_]; }
  const Token& peek() const;
  const Token& next();
  bool is_op(std::string_view op) const;
  bool is_name(std::string_view name) const;
  bool skip_op(std::string_view op);
  bool skip_name(std::string_view name);
  const Token& expect_op(std::string_view op);
  const Token& expect_name();
  const Token& expect(TokenKind kind, std::string_view what);
  [[noreturn]] void fail(const std::string& msg) const;
  [[noreturn]] void fail_at(SourcePos pos, const std::string& msg) const;
  static std::string describe(const Token& t);

  // Statements (parser.cc).
  StmtList subparse(const std::vector<std::string_view>* end_names);
  StmtList parse_statements(const std::vector<std::string_view>& end_names, bool drop_needle);
  StmtPtr parse_statement();
  StmtPtr parse_for();
  StmtPtr parse_if();
  StmtPtr parse_set();
  StmtPtr parse_macro();
  StmtPtr parse_call_block();
  StmtPtr parse_filter_block();
  StmtPtr parse_with();
  StmtPtr parse_print();
  StmtPtr parse_loop_control(StmtKind kind);
  StmtPtr parse_generation();
  void parse_signature(MacroDef& def);
  ExprPtr parse_assign_target(bool with_tuple, bool with_namespace,
                              const std::vector<std::string_view>& extra_end);
  void check_assignable(const Expr& target) const;
  [[noreturn]] void fail_unknown_tag(const std::string& name, SourcePos pos) const;

  // Expressions (parser_expr.cc).
  ExprPtr parse_expression(bool with_condexpr = true);
  ExprPtr parse_condexpr();
  ExprPtr parse_or();
  ExprPtr parse_and();
  ExprPtr parse_not();
  ExprPtr parse_compare();
  ExprPtr parse_math1();
  ExprPtr parse_concat();
  ExprPtr parse_math2();
  ExprPtr parse_pow();
  ExprPtr parse_unary(bool with_filter = true);
  ExprPtr parse_primary(bool with_namespace = false);
  ExprPtr parse_tuple(bool simplified, bool with_condexpr,
                      const std::vector<std::string_view>& extra_end, bool explicit_parens,
                      bool with_namespace = false);
  ExprPtr parse_list();
  ExprPtr parse_dict();
  ExprPtr parse_postfix(ExprPtr node);
  ExprPtr parse_filter_expr(ExprPtr node);
  ExprPtr parse_subscript(ExprPtr node);
  ExprPtr parse_subscribed();
  void parse_call_args(Expr& call);
  ExprPtr parse_call(ExprPtr node);
  ExprPtr parse_filter(ExprPtr node, bool start_inline);
  ExprPtr parse_test(ExprPtr node);
  bool is_tuple_end(const std::vector<std::string_view>& extra_end) const;
  ExprPtr make(ExprKind kind, SourcePos pos, std::vector<ExprPtr> children) const;
  void note_name_use(const std::string& name);

  std::vector<Token> tokens_;
  size_t index_ = 0;
  int depth_ = 0;       // recursion depth of expression parsing and block nesting
  int loop_depth_ = 0;  // enclosing for loops of the current macro, for break/continue
  std::vector<MacroDef*> macro_stack_;
  std::vector<std::vector<std::string_view>> end_stack_;  // for "unknown tag" messages
};

// Counts parser recursion (nested blocks, brackets, unary chains) against a fixed cap.
class DepthGuard {
 public:
  DepthGuard(Parser& p, int limit) : p_(p) {
    if (++p_.depth_ > limit) p_.fail("template nests too deeply");
  }
  ~DepthGuard() { --p_.depth_; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;

 private:
  Parser& p_;
};

}  // namespace macserve::chat
