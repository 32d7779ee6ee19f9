// Expressions, precedence lowest first: conditional, or, and, not, comparisons, + -, ~, * / // %,
// ** (left-associative, as in Jinja), unary - +, then primaries with postfix (. [] ()) and
// filters/tests.
#include <algorithm>

#include "bounds.h"
#include "parser.h"

namespace macserve::chat {
namespace {

int height_of(const ExprPtr& e) { return e ? e->height : 0; }

void finish(Expr& e) {
  int h = 0;
  for (const ExprPtr& c : e.children) h = std::max(h, height_of(c));
  for (const ExprPtr& a : e.args) h = std::max(h, height_of(a));
  for (const auto& kw : e.kwargs) h = std::max(h, height_of(kw.second));
  h = std::max({h, height_of(e.star_args), height_of(e.star_kwargs)});
  e.height = h + 1;
}

}  // namespace

ExprPtr Parser::make(ExprKind kind, SourcePos pos, std::vector<ExprPtr> children) const {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->pos = pos;
  e->children = std::move(children);
  finish(*e);
  if (e->height > kMaxExprHeight) fail_at(pos, "expression nests too deeply");
  return e;
}

void Parser::note_name_use(const std::string& name) {
  // Jinja gives a macro caller/varargs/kwargs parameters only when its body mentions them.
  for (MacroDef* m : macro_stack_) {
    if (name == "caller") m->uses_caller = true;
    if (name == "varargs") m->uses_varargs = true;
    if (name == "kwargs") m->uses_kwargs = true;
  }
}

ExprPtr Parser::parse_expression(bool with_condexpr) {
  DepthGuard guard(*this, kMaxExprHeight);
  return with_condexpr ? parse_condexpr() : parse_or();
}

ExprPtr Parser::parse_condexpr() {
  DepthGuard guard(*this, kMaxExprHeight);
  SourcePos pos = current().pos;
  ExprPtr expr1 = parse_or();
  while (skip_name("if")) {
    ExprPtr expr2 = parse_or();
    ExprPtr expr3 = skip_name("else") ? parse_condexpr() : nullptr;
    std::vector<ExprPtr> parts;
    parts.push_back(std::move(expr2));
    parts.push_back(std::move(expr1));
    parts.push_back(std::move(expr3));
    expr1 = make(ExprKind::kCondExpr, pos, std::move(parts));
    pos = current().pos;
  }
  return expr1;
}

ExprPtr Parser::parse_or() {
  ExprPtr left = parse_and();
  while (is_name("or")) {
    const SourcePos pos = next().pos;
    std::vector<ExprPtr> parts;
    parts.push_back(std::move(left));
    parts.push_back(parse_and());
    left = make(ExprKind::kOr, pos, std::move(parts));
  }
  return left;
}

ExprPtr Parser::parse_and() {
  ExprPtr left = parse_not();
  while (is_name("and")) {
    const SourcePos pos = next().pos;
    std::vector<ExprPtr> parts;
    parts.push_back(std::move(left));
    parts.push_back(parse_not());
    left = make(ExprKind::kAnd, pos, std::move(parts));
  }
  return left;
}

ExprPtr Parser::parse_not() {
  if (!is_name("not")) return parse_compare();
  DepthGuard guard(*this, kMaxExprHeight);
  const SourcePos pos = next().pos;
  std::vector<ExprPtr> parts;
  parts.push_back(parse_not());
  return make(ExprKind::kNot, pos, std::move(parts));
}

ExprPtr Parser::parse_compare() {
  const SourcePos pos = current().pos;
  std::vector<ExprPtr> parts;
  parts.push_back(parse_math1());
  std::vector<CompareKind> ops;
  static const std::pair<std::string_view, CompareKind> kOps[] = {
      {"==", CompareKind::kEq}, {"!=", CompareKind::kNe}, {"<", CompareKind::kLt},
      {"<=", CompareKind::kLe}, {">", CompareKind::kGt},  {">=", CompareKind::kGe}};
  while (true) {
    const auto op = std::find_if(std::begin(kOps), std::end(kOps),
                                 [&](const auto& o) { return is_op(o.first); });
    if (op != std::end(kOps)) {
      next();
      ops.push_back(op->second);
    } else if (skip_name("in")) {
      ops.push_back(CompareKind::kIn);
    } else if (is_name("not") && peek().kind == TokenKind::kName && peek().text == "in") {
      next();
      next();
      ops.push_back(CompareKind::kNotIn);
    } else {
      break;
    }
    parts.push_back(parse_math1());
  }
  if (ops.empty()) return std::move(parts[0]);
  ExprPtr e = make(ExprKind::kCompare, pos, std::move(parts));
  e->compare_ops = std::move(ops);
  return e;
}

ExprPtr Parser::parse_math1() {
  ExprPtr left = parse_concat();
  while (is_op("+") || is_op("-")) {
    const Token& tok = next();
    std::vector<ExprPtr> parts;
    parts.push_back(std::move(left));
    parts.push_back(parse_concat());
    left = make(ExprKind::kBinary, tok.pos, std::move(parts));
    left->op = tok.text == "+" ? BinaryOp::kAdd : BinaryOp::kSub;
  }
  return left;
}

ExprPtr Parser::parse_concat() {
  const SourcePos pos = current().pos;
  std::vector<ExprPtr> args;
  args.push_back(parse_math2());
  while (skip_op("~")) args.push_back(parse_math2());
  if (args.size() == 1) return std::move(args[0]);
  return make(ExprKind::kConcat, pos, std::move(args));
}

ExprPtr Parser::parse_math2() {
  ExprPtr left = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    const Token& tok = next();
    const BinaryOp op = tok.text == "*"    ? BinaryOp::kMul
                        : tok.text == "/"  ? BinaryOp::kDiv
                        : tok.text == "//" ? BinaryOp::kFloorDiv
                                           : BinaryOp::kMod;
    std::vector<ExprPtr> parts;
    parts.push_back(std::move(left));
    parts.push_back(parse_pow());
    left = make(ExprKind::kBinary, tok.pos, std::move(parts));
    left->op = op;
  }
  return left;
}

ExprPtr Parser::parse_pow() {
  ExprPtr left = parse_unary();
  while (is_op("**")) {
    const SourcePos pos = next().pos;
    std::vector<ExprPtr> parts;
    parts.push_back(std::move(left));
    parts.push_back(parse_unary());
    left = make(ExprKind::kBinary, pos, std::move(parts));
    left->op = BinaryOp::kPow;
  }
  return left;
}

ExprPtr Parser::parse_unary(bool with_filter) {
  DepthGuard guard(*this, kMaxExprHeight);
  ExprPtr node;
  if (is_op("-") || is_op("+")) {
    const Token& tok = next();
    std::vector<ExprPtr> parts;
    parts.push_back(parse_unary(false));
    node = make(tok.text == "-" ? ExprKind::kNeg : ExprKind::kPos, tok.pos, std::move(parts));
  } else {
    node = parse_primary();
  }
  node = parse_postfix(std::move(node));
  if (with_filter) node = parse_filter_expr(std::move(node));
  return node;
}

ExprPtr Parser::parse_primary(bool with_namespace) {
  const Token& tok = current();
  ExprPtr node;
  if (tok.kind == TokenKind::kName) {
    next();
    node = make(ExprKind::kLiteral, tok.pos, {});
    if (tok.text == "true" || tok.text == "True" || tok.text == "false" || tok.text == "False") {
      node->literal = Value::boolean(tok.text[0] == 't' || tok.text[0] == 'T');
    } else if (tok.text == "none" || tok.text == "None") {
      node->literal = Value::none();
    } else if (with_namespace && is_op(".")) {
      next();
      node->kind = ExprKind::kNsRef;
      node->name = tok.text;
      node->attr = expect_name().text;
    } else {
      node->kind = ExprKind::kName;
      node->name = tok.text;
      note_name_use(tok.text);
    }
  } else if (tok.kind == TokenKind::kString) {
    std::string text;
    const SourcePos pos = tok.pos;
    while (current().kind == TokenKind::kString) text += next().text;
    node = make(ExprKind::kLiteral, pos, {});
    node->literal = Value::string(std::move(text));
  } else if (tok.kind == TokenKind::kInteger || tok.kind == TokenKind::kFloat) {
    next();
    node = make(ExprKind::kLiteral, tok.pos, {});
    node->literal = tok.kind == TokenKind::kInteger ? Value::integer(tok.int_value)
                                                    : Value::real(tok.float_value);
  } else if (is_op("(")) {
    next();
    node = parse_tuple(false, true, {}, true);
    expect_op(")");
  } else if (is_op("[")) {
    node = parse_list();
  } else if (is_op("{")) {
    node = parse_dict();
  } else {
    fail(fmt::format("unexpected '{}'", describe(tok)));
  }
  return node;
}

bool Parser::is_tuple_end(const std::vector<std::string_view>& extra_end) const {
  const Token& t = current();
  if (t.kind == TokenKind::kVariableEnd || t.kind == TokenKind::kBlockEnd || is_op(")"))
    return true;
  return t.kind == TokenKind::kName &&
         std::find(extra_end.begin(), extra_end.end(), t.text) != extra_end.end();
}

ExprPtr Parser::parse_tuple(bool simplified, bool with_condexpr,
                            const std::vector<std::string_view>& extra_end, bool explicit_parens,
                            bool with_namespace) {
  const SourcePos pos = current().pos;
  std::vector<ExprPtr> args;
  bool is_tuple = false;
  while (true) {
    if (!args.empty()) expect_op(",");
    if (is_tuple_end(extra_end)) break;
    args.push_back(simplified ? parse_primary(with_namespace) : parse_expression(with_condexpr));
    if (!is_op(",")) break;
    is_tuple = true;
  }
  if (!is_tuple) {
    if (!args.empty()) return std::move(args[0]);
    if (!explicit_parens)
      fail(fmt::format("Expected an expression, got '{}'", describe(current())));
  }
  return make(ExprKind::kTuple, pos, std::move(args));
}

ExprPtr Parser::parse_list() {
  const SourcePos pos = expect_op("[").pos;
  std::vector<ExprPtr> items;
  while (!is_op("]")) {
    if (!items.empty()) expect_op(",");
    if (is_op("]")) break;
    items.push_back(parse_expression());
  }
  expect_op("]");
  return make(ExprKind::kList, pos, std::move(items));
}

ExprPtr Parser::parse_dict() {
  const SourcePos pos = expect_op("{").pos;
  std::vector<ExprPtr> items;
  while (!is_op("}")) {
    if (!items.empty()) expect_op(",");
    if (is_op("}")) break;
    items.push_back(parse_expression());
    expect_op(":");
    items.push_back(parse_expression());
  }
  expect_op("}");
  return make(ExprKind::kDict, pos, std::move(items));
}

ExprPtr Parser::parse_postfix(ExprPtr node) {
  while (true) {
    if (is_op(".") || is_op("[")) {
      node = parse_subscript(std::move(node));
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_filter_expr(ExprPtr node) {
  while (true) {
    if (is_op("|")) {
      node = parse_filter(std::move(node), false);
    } else if (is_name("is")) {
      node = parse_test(std::move(node));
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_subscript(ExprPtr node) {
  const Token& tok = next();
  std::vector<ExprPtr> parts;
  parts.push_back(std::move(node));
  if (tok.text == ".") {
    const Token& attr = next();
    if (attr.kind == TokenKind::kName) {
      ExprPtr e = make(ExprKind::kGetAttr, tok.pos, std::move(parts));
      e->name = attr.text;
      return e;
    }
    if (attr.kind != TokenKind::kInteger) fail_at(attr.pos, "expected name or number");
    ExprPtr index = make(ExprKind::kLiteral, attr.pos, {});
    index->literal = Value::integer(attr.int_value);
    parts.push_back(std::move(index));
    return make(ExprKind::kGetItem, tok.pos, std::move(parts));
  }
  std::vector<ExprPtr> args;
  while (!is_op("]")) {
    if (!args.empty()) expect_op(",");
    args.push_back(parse_subscribed());
  }
  expect_op("]");
  parts.push_back(args.size() == 1 ? std::move(args[0])
                                   : make(ExprKind::kTuple, tok.pos, std::move(args)));
  return make(ExprKind::kGetItem, tok.pos, std::move(parts));
}

ExprPtr Parser::parse_subscribed() {
  const SourcePos pos = current().pos;
  std::vector<ExprPtr> args;
  if (skip_op(":")) {
    args.push_back(nullptr);
  } else {
    ExprPtr node = parse_expression();
    if (!skip_op(":")) return node;
    args.push_back(std::move(node));
  }
  const auto at_end = [&] { return is_op("]") || is_op(","); };
  if (is_op(":") || at_end()) {
    args.push_back(nullptr);
  } else {
    args.push_back(parse_expression());
  }
  if (skip_op(":") && !at_end()) {
    args.push_back(parse_expression());
  } else {
    args.push_back(nullptr);
  }
  return make(ExprKind::kSlice, pos, std::move(args));
}

void Parser::parse_call_args(Expr& call) {
  const SourcePos pos = expect_op("(").pos;
  const auto ensure = [&](bool ok) {
    if (!ok) fail_at(pos, "invalid syntax for function call expression");
  };
  bool require_comma = false;
  while (!is_op(")")) {
    if (require_comma) {
      expect_op(",");
      if (is_op(")")) break;
    }
    if (skip_op("*")) {
      ensure(!call.star_args && !call.star_kwargs);
      call.star_args = parse_expression();
    } else if (skip_op("**")) {
      ensure(!call.star_kwargs);
      call.star_kwargs = parse_expression();
    } else if (current().kind == TokenKind::kName && peek().kind == TokenKind::kOperator &&
               peek().text == "=") {
      ensure(!call.star_kwargs);
      std::string key = next().text;
      next();
      call.kwargs.emplace_back(std::move(key), parse_expression());
    } else {
      ensure(!call.star_args && !call.star_kwargs && call.kwargs.empty());
      call.args.push_back(parse_expression());
    }
    require_comma = true;
  }
  expect_op(")");
  finish(call);
  if (call.height > kMaxExprHeight) fail_at(pos, "expression nests too deeply");
}

ExprPtr Parser::parse_call(ExprPtr node) {
  const SourcePos pos = current().pos;
  std::vector<ExprPtr> parts;
  parts.push_back(std::move(node));
  ExprPtr call = make(ExprKind::kCall, pos, std::move(parts));
  parse_call_args(*call);
  return call;
}

ExprPtr Parser::parse_filter(ExprPtr node, bool start_inline) {
  while (is_op("|") || start_inline) {
    if (!start_inline) next();
    start_inline = false;
    const Token& tok = expect_name();
    std::string name = tok.text;
    while (skip_op(".")) name += "." + expect_name().text;
    std::vector<ExprPtr> parts;
    parts.push_back(std::move(node));
    ExprPtr f = make(ExprKind::kFilter, tok.pos, std::move(parts));
    f->name = name;
    f->filter = find_filter(name);
    if (f->filter == nullptr) {
      fail_at(tok.pos, is_unsupported_filter(name)
                           ? fmt::format("the filter '{}' is not supported in chat templates", name)
                           : fmt::format("No filter named '{}'.", name));
    }
    if (is_op("(")) parse_call_args(*f);
    node = std::move(f);
  }
  return node;
}

ExprPtr Parser::parse_test(ExprPtr node) {
  const SourcePos pos = next().pos;
  const bool negated = skip_name("not");
  const Token& tok = expect_name();
  std::string name = tok.text;
  while (skip_op(".")) name += "." + expect_name().text;
  std::vector<ExprPtr> parts;
  parts.push_back(std::move(node));
  ExprPtr t = make(ExprKind::kTest, pos, std::move(parts));
  t->name = name;
  t->test = find_test(name);
  if (t->test == nullptr) fail_at(tok.pos, fmt::format("No test named '{}'.", name));
  const TokenKind k = current().kind;
  if (is_op("(")) {
    parse_call_args(*t);
  } else if ((k == TokenKind::kName || k == TokenKind::kString || k == TokenKind::kInteger ||
              k == TokenKind::kFloat || is_op("[") || is_op("{")) &&
             !is_name("else") && !is_name("or") && !is_name("and")) {
    if (is_name("is")) fail("You cannot chain multiple tests with is");
    t->args.push_back(parse_postfix(parse_primary()));
    finish(*t);
    if (t->height > kMaxExprHeight) fail_at(pos, "expression nests too deeply");
  }
  if (!negated) return t;
  std::vector<ExprPtr> inner;
  inner.push_back(std::move(t));
  return make(ExprKind::kNot, pos, std::move(inner));
}

}  // namespace macserve::chat
