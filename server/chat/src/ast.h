// The parsed template: expression and statement nodes, shaped after Jinja's nodes.py. Nodes are
// plain structs with a kind and children in a fixed layout per kind (documented on each kind),
// which keeps the parser and the interpreter's switch statements short.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "builtins.h"
#include "lexer.h"
#include "value.h"

namespace macserve::chat {

enum class ExprKind {
  kLiteral,   // literal
  kName,      // name
  kList,      // children: items
  kTuple,     // children: items
  kDict,      // children: key0, value0, key1, value1, ...
  kGetAttr,   // children[0].name
  kGetItem,   // children[0][children[1]]; children[1] may be a kSlice
  kSlice,     // children: start, stop, step (each may be null)
  kCall,      // children[0](args, kwargs)
  kFilter,    // children[0] | name(args, kwargs); children[0] is null in filter blocks
  kTest,      // children[0] is name(args, kwargs)
  kNot,       // not children[0]
  kNeg,       // -children[0]
  kPos,       // +children[0]
  kBinary,    // children[0] op children[1]
  kAnd,       // children[0] and children[1]
  kOr,        // children[0] or children[1]
  kConcat,    // children joined with ~
  kCompare,   // children[0] compare_ops[0] children[1] compare_ops[1] children[2] ...
  kCondExpr,  // children[1] if children[0] else children[2] (children[2] may be null)
  kNsRef,     // name.attr as an assignment target ({% set ns.attr = ... %})
};

enum class BinaryOp { kAdd, kSub, kMul, kDiv, kFloorDiv, kMod, kPow };
enum class CompareKind { kEq, kNe, kLt, kLe, kGt, kGe, kIn, kNotIn };

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  ExprKind kind = ExprKind::kLiteral;
  SourcePos pos;
  int height = 1;  // longest path to a leaf; bounded so evaluation recursion is bounded
  Value literal;
  std::string name;
  std::string attr;
  BinaryOp op = BinaryOp::kAdd;
  std::vector<ExprPtr> children;
  std::vector<CompareKind> compare_ops;
  // kCall, kFilter, kTest
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  ExprPtr star_args;          // *args
  ExprPtr star_kwargs;        // **kwargs
  FilterFn filter = nullptr;  // kFilter, resolved at parse time like Jinja's compile-time check
  TestFn test = nullptr;      // kTest
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using StmtList = std::vector<StmtPtr>;

// A macro, or the anonymous `caller` of a {% call %} block.
struct MacroDef {
  std::string name;
  std::vector<std::string> params;
  std::vector<ExprPtr> defaults;  // for the last defaults.size() params
  bool uses_caller = false;       // the body mentions caller/varargs/kwargs, so the call
  bool uses_varargs = false;      // accepts them (Jinja decides this at compile time)
  bool uses_kwargs = false;
  StmtList body;
};

enum class StmtKind {
  kText,         // text
  kPrint,        // {{ expr }}
  kIf,           // if expr: body, elifs in order, else: else_body
  kFor,          // for target in expr [if condition] [recursive]: body else: else_body
  kSet,          // set target = expr
  kSetBlock,     // set target [| filter]: body endset   (expr: the filter chain or null)
  kMacro,        // macro
  kCallBlock,    // call[(macro params)] expr: macro body
  kFilterBlock,  // filter expr: body
  kWith,         // with targets = values: body
  kScope,        // a body with its own scope ({% generation %})
  kBreak,
  kContinue,
};

struct Stmt {
  StmtKind kind = StmtKind::kText;
  SourcePos pos;
  std::string text;
  ExprPtr expr;
  ExprPtr target;
  ExprPtr condition;
  bool recursive = false;
  StmtList body;
  StmtList else_body;
  std::vector<std::pair<ExprPtr, StmtList>> elifs;
  std::unique_ptr<MacroDef> macro;
  std::vector<ExprPtr> with_targets;
  std::vector<ExprPtr> with_values;
};

struct Program {
  StmtList body;
};

}  // namespace macserve::chat
