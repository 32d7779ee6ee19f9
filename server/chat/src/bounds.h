// Fixed bounds that keep any template, however hostile, from crashing or hanging the renderer:
// parsing and evaluation recurse, so nesting is capped well below what the stack holds; values
// nest at most kMaxValueDepth deep so printing and comparing them recurse boundedly too.
// Per-render budgets (output bytes, steps) live in RenderLimits (chat_template.h).
#pragma once

#include <cstddef>
#include <cstdint>

namespace macserve::chat {

inline constexpr size_t kMaxTemplateBytes = size_t{4} << 20;
inline constexpr int kMaxNesting = 128;                   // {% %} blocks inside each other
inline constexpr int kMaxExprHeight = 200;                // operator/postfix chains and brackets
inline constexpr int kMaxValueDepth = 128;                // lists/dicts inside each other
inline constexpr int kMaxEvalDepth = 600;                 // interpreter recursion incl. macro calls
inline constexpr int64_t kMaxRange = 100000;              // Jinja's sandbox MAX_RANGE, same message
inline constexpr size_t kMaxListItems = size_t{1} << 20;  // list * n, batch fill, ...

}  // namespace macserve::chat
