// Statements and the token stream; expressions are in parser_expr.cc.
#include "parser.h"

#include <algorithm>

#include "bounds.h"
#include "macserve/core/error.h"

namespace macserve::chat {

namespace {

std::string quote_list(const std::vector<std::string_view>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += " or ";
    out += '\'';
    out += names[i];
    out += '\'';
  }
  return out;
}

bool contains(const std::vector<std::string_view>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

Program parse_template(std::string_view source) {
  Parser parser(tokenize(source));
  return parser.parse();
}

Program Parser::parse() {
  Program program;
  program.body = subparse(nullptr);
  return program;
}

// ---- token stream ------------------------------------------------------------------------

const Token& Parser::peek() const {
  return index_ + 1 < tokens_.size() ? tokens_[index_ + 1] : tokens_.back();
}

const Token& Parser::next() {
  const Token& t = tokens_[index_];
  if (index_ + 1 < tokens_.size()) ++index_;
  return t;
}

bool Parser::is_op(std::string_view op) const {
  return current().kind == TokenKind::kOperator && current().text == op;
}

bool Parser::is_name(std::string_view name) const {
  return current().kind == TokenKind::kName && current().text == name;
}

bool Parser::skip_op(std::string_view op) {
  if (!is_op(op)) return false;
  next();
  return true;
}

bool Parser::skip_name(std::string_view name) {
  if (!is_name(name)) return false;
  next();
  return true;
}

const Token& Parser::expect_op(std::string_view op) {
  if (!is_op(op)) fail(fmt::format("expected token '{}', got '{}'", op, describe(current())));
  return next();
}

const Token& Parser::expect_name() {
  if (current().kind != TokenKind::kName) {
    fail(fmt::format("expected token 'name', got '{}'", describe(current())));
  }
  return next();
}

const Token& Parser::expect(TokenKind kind, std::string_view what) {
  if (current().kind != kind) {
    if (current().kind == TokenKind::kEof) {
      fail(fmt::format("unexpected end of template, expected '{}'", what));
    }
    fail(fmt::format("expected token '{}', got '{}'", what, describe(current())));
  }
  return next();
}

void Parser::fail(const std::string& msg) const { fail_at(current().pos, msg); }

void Parser::fail_at(SourcePos pos, const std::string& msg) const {
  throw Error(ErrorCode::kInvalidArgument,
              fmt::format("chat template syntax error at line {}, column {}: {}", pos.line,
                          pos.column, msg));
}

std::string Parser::describe(const Token& t) {
  switch (t.kind) {
    case TokenKind::kData:
      return "template data / text";
    case TokenKind::kVariableBegin:
      return "begin of print statement";
    case TokenKind::kVariableEnd:
      return "end of print statement";
    case TokenKind::kBlockBegin:
      return "begin of statement block";
    case TokenKind::kBlockEnd:
      return "end of statement block";
    case TokenKind::kName:
    case TokenKind::kOperator:
      return t.text;
    case TokenKind::kString:
      return "string";
    case TokenKind::kInteger:
      return "integer";
    case TokenKind::kFloat:
      return "float";
    case TokenKind::kEof:
      return "end of template";
  }
  return "token";
}

// ---- statements --------------------------------------------------------------------------

StmtList Parser::subparse(const std::vector<std::string_view>* end_names) {
  StmtList body;
  while (current().kind != TokenKind::kEof) {
    const Token& tok = current();
    if (tok.kind == TokenKind::kData) {
      auto s = std::make_unique<Stmt>();
      s->kind = StmtKind::kText;
      s->pos = tok.pos;
      s->text = tok.text;
      body.push_back(std::move(s));
      next();
    } else if (tok.kind == TokenKind::kVariableBegin) {
      auto s = std::make_unique<Stmt>();
      s->kind = StmtKind::kPrint;
      s->pos = next().pos;
      s->expr = parse_tuple(false, true, {}, false);
      expect(TokenKind::kVariableEnd, "end of print statement");
      body.push_back(std::move(s));
    } else if (tok.kind == TokenKind::kBlockBegin) {
      next();
      if (end_names != nullptr && current().kind == TokenKind::kName &&
          contains(*end_names, current().text)) {
        return body;
      }
      body.push_back(parse_statement());
      expect(TokenKind::kBlockEnd, "end of statement block");
    } else {
      fail(fmt::format("unexpected '{}'", describe(tok)));
    }
  }
  return body;
}

StmtList Parser::parse_statements(const std::vector<std::string_view>& end_names,
                                  bool drop_needle) {
  skip_op(":");
  expect(TokenKind::kBlockEnd, "end of statement block");
  DepthGuard guard(*this, kMaxNesting);
  end_stack_.push_back(end_names);
  StmtList body = subparse(&end_names);
  if (current().kind == TokenKind::kEof) {
    fail(fmt::format("unexpected end of template; expected {}", quote_list(end_names)));
  }
  end_stack_.pop_back();
  if (drop_needle) next();
  return body;
}

void Parser::fail_unknown_tag(const std::string& name, SourcePos pos) const {
  std::string msg = fmt::format("Encountered unknown tag '{}'.", name);
  if (!end_stack_.empty()) {
    const bool expected = std::any_of(end_stack_.begin(), end_stack_.end(),
                                      [&](const auto& names) { return contains(names, name); });
    msg += expected ? fmt::format(
                          " You probably made a nesting mistake; the innermost block "
                          "expects {}.",
                          quote_list(end_stack_.back()))
                    : fmt::format(" Expected {}.", quote_list(end_stack_.back()));
  }
  fail_at(pos, msg);
}

StmtPtr Parser::parse_statement() {
  const Token& tok = current();
  if (tok.kind != TokenKind::kName) fail("tag name expected");
  const std::string& name = tok.text;
  if (name == "for") return parse_for();
  if (name == "if") return parse_if();
  if (name == "set") return parse_set();
  if (name == "macro") return parse_macro();
  if (name == "call") return parse_call_block();
  if (name == "filter") return parse_filter_block();
  if (name == "with") return parse_with();
  if (name == "print") return parse_print();
  if (name == "break") return parse_loop_control(StmtKind::kBreak);
  if (name == "continue") return parse_loop_control(StmtKind::kContinue);
  if (name == "generation") return parse_generation();
  if (name == "block" || name == "extends" || name == "include" || name == "import" ||
      name == "from" || name == "autoescape") {
    fail(fmt::format("the '{}' tag is not supported in chat templates", name));
  }
  fail_unknown_tag(name, tok.pos);
}

StmtPtr Parser::parse_for() {
  auto s = std::make_unique<Stmt>();
  s->kind = StmtKind::kFor;
  s->pos = next().pos;
  s->target = parse_assign_target(true, false, {"in"});
  if (!skip_name("in")) fail(fmt::format("expected token 'in', got '{}'", describe(current())));
  s->expr = parse_tuple(false, false, {"recursive"}, false);
  if (skip_name("if")) s->condition = parse_expression();
  s->recursive = skip_name("recursive");
  ++loop_depth_;
  s->body = parse_statements({"endfor", "else"}, false);
  --loop_depth_;
  if (next().text != "endfor") s->else_body = parse_statements({"endfor"}, true);
  return s;
}

StmtPtr Parser::parse_if() {
  auto s = std::make_unique<Stmt>();
  s->kind = StmtKind::kIf;
  s->pos = next().pos;
  s->expr = parse_tuple(false, false, {}, false);
  s->body = parse_statements({"elif", "else", "endif"}, false);
  while (true) {
    const std::string tag = next().text;
    if (tag == "elif") {
      ExprPtr test = parse_tuple(false, false, {}, false);
      StmtList body = parse_statements({"elif", "else", "endif"}, false);
      s->elifs.emplace_back(std::move(test), std::move(body));
      continue;
    }
    if (tag == "else") s->else_body = parse_statements({"endif"}, true);
    break;
  }
  return s;
}

StmtPtr Parser::parse_set() {
  auto s = std::make_unique<Stmt>();
  s->pos = next().pos;
  s->target = parse_assign_target(true, true, {});
  if (skip_op("=")) {
    s->kind = StmtKind::kSet;
    s->expr = parse_tuple(false, true, {}, false);
    return s;
  }
  s->kind = StmtKind::kSetBlock;
  s->expr = parse_filter(nullptr, false);
  s->body = parse_statements({"endset"}, true);
  return s;
}

void Parser::parse_signature(MacroDef& def) {
  expect_op("(");
  while (!is_op(")")) {
    if (!def.params.empty()) expect_op(",");
    const Token& name = expect_name();
    if (name.text == "true" || name.text == "false" || name.text == "none" || name.text == "True" ||
        name.text == "False" || name.text == "None") {
      fail_at(name.pos, "can't assign to 'const'");
    }
    if (skip_op("=")) {
      def.defaults.push_back(parse_expression());
    } else if (!def.defaults.empty()) {
      fail("non-default argument follows default argument");
    }
    def.params.push_back(name.text);
  }
  expect_op(")");
}

StmtPtr Parser::parse_macro() {
  auto s = std::make_unique<Stmt>();
  s->kind = StmtKind::kMacro;
  s->pos = next().pos;
  s->macro = std::make_unique<MacroDef>();
  s->macro->name = expect_name().text;
  parse_signature(*s->macro);
  macro_stack_.push_back(s->macro.get());
  const int saved_loop_depth = loop_depth_;
  loop_depth_ = 0;
  s->macro->body = parse_statements({"endmacro"}, true);
  loop_depth_ = saved_loop_depth;
  macro_stack_.pop_back();
  return s;
}

StmtPtr Parser::parse_call_block() {
  auto s = std::make_unique<Stmt>();
  s->kind = StmtKind::kCallBlock;
  s->pos = next().pos;
  s->macro = std::make_unique<MacroDef>();
  s->macro->name = "caller";
  if (is_op("(")) parse_signature(*s->macro);
  s->expr = parse_expression();
  if (s->expr->kind != ExprKind::kCall) fail_at(s->pos, "expected call");
  macro_stack_.push_back(s->macro.get());
  const int saved_loop_depth = loop_depth_;
  loop_depth_ = 0;
  s->macro->body = parse_statements({"endcall"}, true);
  loop_depth_ = saved_loop_depth;
  macro_stack_.pop_back();
  return s;
}

StmtPtr Parser::parse_filter_block() {
  auto s = std::make_unique<Stmt>();
  s->kind = StmtKind::kFilterBlock;
  s->pos = next().pos;
  s->expr = parse_filter(nullptr, true);
  s->body = parse_statements({"endfilter"}, true);
  return s;
}

StmtPtr Parser::parse_with() {
  auto s = std::make_unique<Stmt>();
  s->kind = StmtKind::kWith;
  s->pos = next().pos;
  while (current().kind != TokenKind::kBlockEnd) {
    if (!s->with_targets.empty()) expect_op(",");
    s->with_targets.push_back(parse_assign_target(true, false, {}));
    expect_op("=");
    s->with_values.push_back(parse_expression());
  }
  s->body = parse_statements({"endwith"}, true);
  return s;
}

StmtPtr Parser::parse_print() {
  // {% print a, b %} writes str(a) then str(b): the same as {{ a ~ b }}.
  auto s = std::make_unique<Stmt>();
  s->kind = StmtKind::kPrint;
  s->pos = next().pos;
  std::vector<ExprPtr> items;
  while (current().kind != TokenKind::kBlockEnd) {
    if (!items.empty()) expect_op(",");
    items.push_back(parse_expression());
  }
  if (items.empty()) fail("Expected an expression, got 'end of statement block'");
  s->expr =
      items.size() == 1 ? std::move(items[0]) : make(ExprKind::kConcat, s->pos, std::move(items));
  return s;
}

StmtPtr Parser::parse_loop_control(StmtKind kind) {
  auto s = std::make_unique<Stmt>();
  s->kind = kind;
  s->pos = current().pos;
  const std::string name = next().text;
  if (loop_depth_ == 0) fail_at(s->pos, fmt::format("'{}' outside loop", name));
  return s;
}

StmtPtr Parser::parse_generation() {
  auto s = std::make_unique<Stmt>();
  s->kind = StmtKind::kScope;
  s->pos = next().pos;
  s->body = parse_statements({"endgeneration"}, true);
  return s;
}

ExprPtr Parser::parse_assign_target(bool with_tuple, bool with_namespace,
                                    const std::vector<std::string_view>& extra_end) {
  ExprPtr target = with_tuple ? parse_tuple(true, true, extra_end, false, with_namespace)
                              : parse_primary(with_namespace);
  check_assignable(*target);
  return target;
}

void Parser::check_assignable(const Expr& target) const {
  if (target.kind == ExprKind::kName || target.kind == ExprKind::kNsRef) return;
  if (target.kind == ExprKind::kTuple) {
    for (const ExprPtr& item : target.children) check_assignable(*item);
    return;
  }
  if (target.kind == ExprKind::kLiteral) fail_at(target.pos, "can't assign to 'const'");
  fail_at(target.pos, "can't assign to this expression");
}

}  // namespace macserve::chat
